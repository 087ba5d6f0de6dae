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

HOLDS_TOKEN = sa.text("contract_id IS NOT NULL")
IS_DELETED = sa.text("lifecycle = 'DELETED'")


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_renewed_at", heron.db.base.UtcDateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_devices_token_end_at", ["token_end_at"], sqlite_where=HOLDS_TOKEN, postgresql_where=HOLDS_TOKEN
        )
        batch_op.create_index(
            "ix_devices_deleted_at", ["deleted_at"], sqlite_where=IS_DELETED, postgresql_where=IS_DELETED
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_deleted_at")
        batch_op.drop_index("ix_devices_token_end_at")
        batch_op.drop_column("token_renewed_at")
