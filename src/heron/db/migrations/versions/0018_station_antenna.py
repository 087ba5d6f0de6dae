"""base stations: antenna height and gain, for the service prediction

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("base_stations", sa.Column("antenna_height", sa.Float(), nullable=True))
    op.add_column("base_stations", sa.Column("antenna_gain", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("base_stations") as batch_op:
        batch_op.drop_column("antenna_gain")
        batch_op.drop_column("antenna_height")
