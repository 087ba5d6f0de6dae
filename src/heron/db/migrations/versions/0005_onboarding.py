"""onboarding: registration tokens, API users bound to one application, job message entities

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import heron.db.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_to", sa.String(length=250), nullable=False),
        sa.Column("created_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", heron.db.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", heron.db.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("used_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("registration_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_registration_tokens_code_hash"), ["code_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_registration_tokens_group_id"), ["group_id"], unique=False)
    with op.batch_alter_table("job_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entity", sa.String(length=40), nullable=True))
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_contract_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("device_type_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_api_users_device_type_id", "device_types", ["device_type_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("api_users", schema=None) as batch_op:
        batch_op.drop_constraint("fk_api_users_device_type_id", type_="foreignkey")
        batch_op.drop_column("device_type_id")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("requested_contract_id")
    with op.batch_alter_table("job_messages", schema=None) as batch_op:
        batch_op.drop_column("entity")
    op.drop_table("registration_tokens")
