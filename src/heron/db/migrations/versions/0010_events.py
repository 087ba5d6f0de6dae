"""events: device and base-station events, the overusage counters, open losses and outages

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "station_outages",
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("since", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["base_stations.id"],
            name=op.f("fk_station_outages_station_id_base_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", name=op.f("pk_station_outages")),
    )
    op.create_table(
        "device_losses",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("since", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_losses_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_device_losses")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("station_id", sa.Integer(), nullable=True),
        sa.Column("time", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_events_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["base_stations.id"], name=op.f("fk_events_station_id_base_stations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("device_id", "kind", "day", name=op.f("uq_events_device_id_kind_day")),
    )
    op.create_index("ix_events_device_id_time", "events", ["device_id", "time"], unique=False)
    op.create_index("ix_events_station_id_time", "events", ["station_id", "time"], unique=False)
    op.create_table(
        "uplink_counts",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("uplinks", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_uplink_counts_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("device_id", "day", name=op.f("pk_uplink_counts")),
    )
    op.create_index(op.f("ix_uplink_counts_day"), "uplink_counts", ["day"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_uplink_counts_day"), table_name="uplink_counts")
    op.drop_table("uplink_counts")
    op.drop_index("ix_events_station_id_time", table_name="events")
    op.drop_index("ix_events_device_id_time", table_name="events")
    op.drop_table("events")
    op.drop_table("device_losses")
    op.drop_table("station_outages")
