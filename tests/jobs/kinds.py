"""A job kind for testing the engine: each row writes one audit event (a real, durable row),
so "exactly once" can be counted after a crash. Also the entry point of the runner process
that the kill -9 test starts and kills."""

from __future__ import annotations

import sys
import time
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.jobs.engine import JobContext, JobKind, JobRunner, RowOutcome, register_kind
from heron.tenancy.models import AuditEvent

KIND = "test.write_rows"


def _write_rows(session: Session, ctx: JobContext, rows: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    if ctx.params.get("explode_at") is not None and any(seq == ctx.params["explode_at"] for seq, _ in rows):
        raise RuntimeError("boom")
    outcomes, good = [], []
    for seq, row in rows:
        name = row.get("name")
        if not isinstance(name, str) or len(name) < 3:
            outcomes.append(RowOutcome("errors", f"row {seq + 1}: name must be at least 3 characters"))
            continue
        outcomes.append(RowOutcome("written"))
        good.append(
            {
                "time": utcnow(),
                "actor": ctx.created_by,
                "action": "test",
                "object_type": "test-row",
                "object_id": f"{ctx.job_id}:{seq}",
                "group_path": ctx.group_path,
                "request_id": None,
                "details": name,
            }
        )
    if good:
        session.execute(insert(AuditEvent), good)
    time.sleep(float(ctx.params.get("delay", 0)))
    return outcomes


register_kind(JobKind(KIND, _write_rows, ("written", "errors"), batch_size=200))


def run_forever(url: str) -> None:
    runner = JobRunner(Database(url), idle_poll=0.05)
    runner.start()
    while True:
        time.sleep(1)


if __name__ == "__main__":
    run_forever(sys.argv[1])
