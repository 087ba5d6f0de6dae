"""the Sigfox cloud bridge; message retention per contract

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sigfox_bridges",
        sa.Column("device_type_id", sa.Integer(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("created_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_type_id"],
            ["device_types.id"],
            name=op.f("fk_sigfox_bridges_device_type_id_device_types"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["base_stations.id"], name=op.f("fk_sigfox_bridges_station_id_base_stations")
        ),
        sa.PrimaryKeyConstraint("device_type_id", name=op.f("pk_sigfox_bridges")),
    )
    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_retention_days", sa.Integer(), nullable=False, server_default="30"))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("messages_purged_at", heron.db.base.UtcDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("messages_purged_at")
    with op.batch_alter_table("contracts", schema=None) as batch_op:
        batch_op.drop_column("message_retention_days")
    op.drop_table("sigfox_bridges")
