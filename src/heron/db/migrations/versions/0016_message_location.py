"""messages: the network's estimate of where the device was (computedLocation)

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("loc_lat", sa.Float(), nullable=True))
    op.add_column("messages", sa.Column("loc_lng", sa.Float(), nullable=True))
    op.add_column("messages", sa.Column("loc_radius", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("loc_source", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        for column in ("loc_source", "loc_radius", "loc_lng", "loc_lat"):
            batch_op.drop_column(column)
