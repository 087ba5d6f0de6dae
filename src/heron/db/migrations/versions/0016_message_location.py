"""messages: the network's estimate of where the device was (computedLocation); when the
first reception reached Heron (arrived_at: `time` becomes when the network heard the frame)

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("loc_lat", sa.Float(), nullable=True))
    op.add_column("messages", sa.Column("loc_lng", sa.Float(), nullable=True))
    op.add_column("messages", sa.Column("loc_radius", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("loc_source", sa.Integer(), nullable=True))
    # Stored messages' `time` was their arrival; new ones' is the station time heard.
    op.add_column("messages", sa.Column("arrived_at", heron.db.base.UtcDateTime(timezone=True), nullable=True))
    op.execute("UPDATE messages SET arrived_at = time")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.alter_column("arrived_at", existing_type=heron.db.base.UtcDateTime(timezone=True), nullable=False)
        batch_op.create_index("ix_messages_device_id_arrived_at", ["device_id", "arrived_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_index("ix_messages_device_id_arrived_at")
        batch_op.drop_column("arrived_at")
        for column in ("loc_source", "loc_radius", "loc_lng", "loc_lat"):
            batch_op.drop_column(column)
