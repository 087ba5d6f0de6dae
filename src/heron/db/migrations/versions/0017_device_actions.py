"""devices: unsubscription time and suspension; downlinks per device and day beside the uplinks

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch_op:
        batch_op.add_column(sa.Column("unsubscription_at", heron.db.base.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("suspended", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("uplink_counts", sa.Column("downlinks", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("uplink_counts") as batch_op:
        batch_op.drop_column("downlinks")
    with op.batch_alter_table("devices") as batch_op:
        batch_op.drop_column("suspended")
        batch_op.drop_column("unsubscription_at")
