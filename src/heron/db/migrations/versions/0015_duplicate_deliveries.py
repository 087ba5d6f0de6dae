"""deliveries of sendDuplicate callbacks: the delivery a copy duplicates and the reception it carries

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("duplicate_of", _BIG_ID, nullable=True))
    op.add_column("deliveries", sa.Column("reception_id", _BIG_ID, nullable=True))
    op.create_index(
        "ix_deliveries_duplicate",
        "deliveries",
        ["duplicate_of", "reception_id"],
        unique=True,
        sqlite_where=sa.text("duplicate_of IS NOT NULL"),
        postgresql_where=sa.text("duplicate_of IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_duplicate", table_name="deliveries")
    op.drop_column("deliveries", "reception_id")
    op.drop_column("deliveries", "duplicate_of")
