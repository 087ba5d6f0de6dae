"""stations: the device type a station delivers alone

A Sigfox cloud bridge's virtual station delivers only its device type's devices. That rule is
the core's (the uplink store and the downlink decider apply it), so it is read from the station
itself, `base_stations.device_type_id`, instead of from the Sigfox adapter's `sigfox_bridges`.
Filled from the bridges there are.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("base_stations") as batch:
        batch.add_column(sa.Column("device_type_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_base_stations_device_type_id_device_types",
            "device_types",
            ["device_type_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.execute(
        "UPDATE base_stations SET device_type_id = "
        "(SELECT b.device_type_id FROM sigfox_bridges b WHERE b.station_id = base_stations.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("base_stations") as batch:
        batch.drop_constraint("fk_base_stations_device_type_id_device_types", type_="foreignkey")
        batch.drop_column("device_type_id")
