"""deliveries: the worker process that holds a lease, so a restarted worker takes back its dead process's leases at once

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
