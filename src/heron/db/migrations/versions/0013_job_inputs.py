"""job input rows in a table of their own (status polls and progress updates stop reading and
rewriting them)

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_inputs",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_inputs_job_id_jobs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_inputs")),
    )
    # Unfinished jobs keep their rows (a finished job's input is already emptied).
    op.execute(
        "INSERT INTO job_inputs (job_id, rows) SELECT id, input FROM jobs"
        " WHERE state IN ('INITIAL', 'QUEUED', 'RUNNING')"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("input")


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("input", sa.Text(), nullable=False, server_default="[]"))
    op.execute(
        "UPDATE jobs SET input = (SELECT rows FROM job_inputs WHERE job_inputs.job_id = jobs.id) WHERE id IN (SELECT job_id FROM job_inputs)"
    )
    op.drop_table("job_inputs")
