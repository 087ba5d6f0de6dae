"""devices: Sigfox and LoRaWAN devices (root keys as keyring ciphertexts)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("network", sa.String(length=8), nullable=False),
        sa.Column("identifier", sa.String(length=16), nullable=False),
        sa.Column("sort_key", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("device_type_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("contract_id", sa.Integer(), nullable=True),
        sa.Column("token_alloc", sa.String(length=24), nullable=True),
        sa.Column("token_state", sa.String(length=12), nullable=False),
        sa.Column("token_end_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lng", sa.Float(), nullable=True),
        sa.Column("tags", sa.Text(), nullable=True),
        sa.Column("dev_type", sa.String(length=100), nullable=True),
        sa.Column("product_certificate", sa.String(length=64), nullable=True),
        sa.Column("modem_certificate", sa.String(length=64), nullable=True),
        sa.Column("prototype", sa.Boolean(), nullable=False),
        sa.Column("activable", sa.Boolean(), nullable=False),
        sa.Column("automatic_renewal", sa.Boolean(), nullable=False),
        sa.Column("lifecycle", sa.String(length=12), nullable=False),
        sa.Column("activated_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("com_state", sa.Integer(), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=True),
        sa.Column("pac", sa.String(length=200), nullable=True),
        sa.Column("nak", sa.String(length=200), nullable=True),
        sa.Column("app_key", sa.String(length=200), nullable=True),
        sa.Column("join_eui", sa.String(length=200), nullable=True),
        sa.Column("prof_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("updated_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name=op.f("ck_devices_lat_range")),
        sa.CheckConstraint("lng IS NULL OR (lng >= -180 AND lng <= 180)", name=op.f("ck_devices_lng_range")),
        sa.ForeignKeyConstraint(["contract_id"], ["contracts.id"], name=op.f("fk_devices_contract_id_contracts")),
        sa.ForeignKeyConstraint(
            ["device_type_id"], ["device_types.id"], name=op.f("fk_devices_device_type_id_device_types")
        ),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name=op.f("fk_devices_group_id_groups")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("network", "identifier", name=op.f("uq_devices_network_identifier")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_devices_contract_id"), ["contract_id"], unique=False)
        batch_op.create_index("ix_devices_device_type_id_sort_key", ["device_type_id", "sort_key"], unique=False)
        batch_op.create_index(
            "ix_devices_group_id_lifecycle_sort_key", ["group_id", "lifecycle", "sort_key"], unique=False
        )
        batch_op.create_index("ix_devices_group_id_sort_key", ["group_id", "sort_key"], unique=False)
        batch_op.create_index("ix_devices_sort_key", ["sort_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_sort_key")
        batch_op.drop_index("ix_devices_group_id_sort_key")
        batch_op.drop_index("ix_devices_group_id_lifecycle_sort_key")
        batch_op.drop_index("ix_devices_device_type_id_sort_key")
        batch_op.drop_index(batch_op.f("ix_devices_contract_id"))

    op.drop_table("devices")
