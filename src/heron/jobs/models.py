"""Tables of the job engine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from heron.db.base import Base, UtcDateTime, path_column_type


class Job(Base):
    """A bulk operation. Its input rows are stored beside it (`JobInput`), and `processed`
    counts the rows whose results are committed: rows are run in order, batch by batch, each
    batch in one transaction with its domain writes, so a crash loses no committed row and
    leaves no row half-written."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_group_path_id", "group_path", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    req_id: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(10))  # INITIAL, QUEUED, RUNNING, DONE_SUC, DONE_FAIL
    group_path: Mapped[str] = mapped_column(path_column_type())
    created_by: Mapped[str] = mapped_column(String(64))
    lock_keys: Mapped[str] = mapped_column(String(400))  # ",dt:3,dt:7," : what it must hold to run
    params: Mapped[str] = mapped_column(Text, default="{}")
    total: Mapped[int] = mapped_column(Integer, default=0)
    processed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[str] = mapped_column(String(2000), default="{}")
    failure: Mapped[str | None] = mapped_column(String(2000))
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    callback_headers: Mapped[str | None] = mapped_column(Text)  # keyring ciphertext of a JSON object
    runner: Mapped[str | None] = mapped_column(String(100))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class JobInput(Base):
    """A job's input rows, one JSON document, in a table of its own: status polls and the
    progress update of every batch then touch only the small `jobs` row (SQLite reads through,
    and on UPDATE rewrites, a row's overflow pages: megabytes for a 10,000-row job). Only the
    runner reads it; it is deleted when the job ends (it may hold sealed root keys)."""

    __tablename__ = "job_inputs"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    rows: Mapped[str] = mapped_column(Text)


class JobMessage(Base):
    """A row's message (an error, or a notice such as a changed key), in row order."""

    __tablename__ = "job_messages"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    entity: Mapped[str | None] = mapped_column(String(40))  # the row's device id, when it has one
    message: Mapped[str] = mapped_column(String(1000))


class JobLock(Base):
    """Held by a running job for each device type (application) it works on: the primary key is
    what makes "one job at a time per device type" hold across processes."""

    __tablename__ = "job_locks"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
