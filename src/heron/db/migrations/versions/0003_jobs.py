"""jobs: the job engine's jobs, row messages and per-device-type locks

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("req_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("group_path", heron.db.base.path_column_type(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("lock_keys", sa.String(length=400), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("stats", sa.String(length=2000), nullable=False),
        sa.Column("failure", sa.String(length=2000), nullable=True),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("callback_headers", sa.Text(), nullable=True),
        sa.Column("runner", sa.String(length=100), nullable=True),
        sa.Column("heartbeat_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("req_id", name=op.f("uq_jobs_req_id")),
    )
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])
    op.create_index("ix_jobs_group_path_id", "jobs", ["group_path", "id"])
    op.create_table(
        "job_messages",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("message", sa.String(length=1000), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_messages_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_job_messages")),
    )
    op.create_table(
        "job_locks",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_locks_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_job_locks")),
    )
    op.create_index("ix_job_locks_job_id", "job_locks", ["job_id"])


def downgrade() -> None:
    op.drop_table("job_locks")
    op.drop_table("job_messages")
    op.drop_index("ix_jobs_group_path_id", table_name="jobs")
    op.drop_index("ix_jobs_state_id", table_name="jobs")
    op.drop_table("jobs")
