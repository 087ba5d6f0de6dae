"""deliveries: the worker process that holds a lease, so a restarted worker takes back its dead process's leases at once

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("leased_by", sa.String(length=64), nullable=True))
    # Partial: only rows in flight carry a holder (a few), so the takeover's scan is small.
    op.create_index(
        "ix_deliveries_leased",
        "deliveries",
        ["leased_by"],
        sqlite_where=sa.text("leased_by IS NOT NULL"),
        postgresql_where=sa.text("leased_by IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_leased", table_name="deliveries")
    op.drop_column("deliveries", "leased_by")
