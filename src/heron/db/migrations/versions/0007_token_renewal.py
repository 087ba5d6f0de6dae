"""token renewal: when a device's token was last renewed, and the index that finds due tokens

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_renewed_at", heron.db.base.UtcDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_devices_token_end_at", ["token_end_at"], unique=False)
        batch_op.create_index("ix_devices_lifecycle_deleted_at", ["lifecycle", "deleted_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_lifecycle_deleted_at")
        batch_op.drop_index("ix_devices_token_end_at")
        batch_op.drop_column("token_renewed_at")
