"""device queries: filter indexes per group (comState, token state) and one index per sort order

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_devices_group_id_com_state_lifecycle_sort_key": ["group_id", "com_state", "lifecycle", "sort_key"],
    "ix_devices_group_id_token_state_lifecycle_sort_key": ["group_id", "token_state", "lifecycle", "sort_key"],
    "ix_devices_name_sort_key": ["name", "sort_key"],
    "ix_devices_last_seen_at_sort_key": ["last_seen_at", "sort_key"],
}


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        for name in reversed(INDEXES):
            batch_op.drop_index(name)
