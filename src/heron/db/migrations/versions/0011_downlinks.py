"""downlinks: the queue of answers to uplinks that ask for one

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
IS_OPEN = sa.text("state IN ('DECIDING', 'PENDING', 'SENT')")
ACK_REQUIRED = sa.text("ack_required")


def upgrade() -> None:
    op.create_table(
        "downlinks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("device_type_id", sa.Integer(), nullable=False),
        sa.Column("message_id", BIG_ID, nullable=True),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("data", sa.String(length=16), nullable=True),
        sa.Column("station_id", sa.Integer(), nullable=True),
        sa.Column("callback_id", sa.Integer(), nullable=True),
        sa.Column("decide_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("transmit_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_downlinks_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_downlinks_message_id_messages"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["base_stations.id"], name=op.f("fk_downlinks_station_id_base_stations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_downlinks")),
        sa.UniqueConstraint("message_id", name=op.f("uq_downlinks_message_id")),
    )
    with op.batch_alter_table("downlinks", schema=None) as batch_op:
        batch_op.create_index("ix_downlinks_device_id_created_at", ["device_id", "created_at"], unique=False)
        batch_op.create_index(
            "ix_downlinks_open", ["state", "station_id"], unique=False, sqlite_where=IS_OPEN, postgresql_where=IS_OPEN
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_ack_time", ["time"], unique=False, sqlite_where=ACK_REQUIRED, postgresql_where=ACK_REQUIRED
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_ack_time")
    with op.batch_alter_table("downlinks", schema=None) as batch_op:
        batch_op.drop_index("ix_downlinks_open")
        batch_op.drop_index("ix_downlinks_device_id_created_at")
    op.drop_table("downlinks")
