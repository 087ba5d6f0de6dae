"""Every job kind, registered with the job engine by whatever runs jobs or submits them (the
process context): named here, not left to which routers a process happened to import."""

from __future__ import annotations

from heron.jobs import engine
from heron.network.sigfox import coverage
from heron.registry import bulk_jobs, onboarding


def register_job_kinds() -> None:
    for kind in (*bulk_jobs.JOB_KINDS, *onboarding.JOB_KINDS, *coverage.JOB_KINDS):
        engine.register_kind(kind)
