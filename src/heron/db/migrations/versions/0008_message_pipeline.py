"""message pipeline: base stations, messages, receptions

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "base_stations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lng", sa.Float(), nullable=True),
        sa.Column("altitude", sa.Integer(), nullable=True),
        sa.Column("radio_zone", sa.String(length=4), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("last_seen_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("secret_rotated_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name=op.f("ck_base_stations_lat_range")),
        sa.CheckConstraint("lng IS NULL OR (lng >= -180 AND lng <= 180)", name=op.f("ck_base_stations_lng_range")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name=op.f("fk_base_stations_group_id_groups")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_base_stations")),
        sa.UniqueConstraint("identifier", name=op.f("uq_base_stations_identifier")),
    )
    with op.batch_alter_table("base_stations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_base_stations_group_id"), ["group_id"], unique=False)

    op.create_table(
        "station_traffic",
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("hour", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("undelivered", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["base_stations.id"],
            name=op.f("fk_station_traffic_station_id_base_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", "hour", name=op.f("pk_station_traffic")),
    )
    op.create_table(
        "undelivered_frames",
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=16), nullable=False),
        sa.Column("hour", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["base_stations.id"],
            name=op.f("fk_undelivered_frames_station_id_base_stations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("station_id", "device", "hour", name=op.f("pk_undelivered_frames")),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("device_type_id", sa.Integer(), nullable=False),
        sa.Column("time", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("seq_number", sa.Integer(), nullable=False),
        sa.Column("frame_type", sa.String(length=10), nullable=False),
        sa.Column("data", sa.String(length=24), nullable=False),
        sa.Column("ack_required", sa.Boolean(), nullable=False),
        sa.Column("nb_frames", sa.Integer(), nullable=False),
        sa.Column("receptions", sa.Integer(), nullable=False),
        sa.Column("best_rssi", sa.Float(), nullable=True),
        sa.Column("lqi", sa.Integer(), nullable=False),
        sa.Column("lost", sa.Integer(), nullable=False),
        sa.Column("decoded", sa.Text(), nullable=True),
        sa.Column("service", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_messages_device_id_devices"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_device_id_time", ["device_id", "time"], unique=False)
        batch_op.create_index("ix_messages_device_type_id_time", ["device_type_id", "time"], unique=False)

    op.create_table(
        "receptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("station_id", sa.Integer(), nullable=False),
        sa.Column("time", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("rssi", sa.Float(), nullable=True),
        sa.Column("snr", sa.Float(), nullable=True),
        sa.Column("freq", sa.Float(), nullable=True),
        sa.Column("rep", sa.Integer(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_receptions_message_id_messages"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["station_id"], ["base_stations.id"], name=op.f("fk_receptions_station_id_base_stations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_receptions")),
    )
    with op.batch_alter_table("receptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receptions_message_id"), ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("receptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receptions_message_id"))

    op.drop_table("receptions")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_device_type_id_time")
        batch_op.drop_index("ix_messages_device_id_time")

    op.drop_table("messages")
    op.drop_table("undelivered_frames")
    op.drop_table("station_traffic")
    with op.batch_alter_table("base_stations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_base_stations_group_id"))

    op.drop_table("base_stations")
