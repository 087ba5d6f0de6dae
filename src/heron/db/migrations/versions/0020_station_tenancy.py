"""base stations and the bridge: tenancy of infrastructure

`base_station:write` left ADMIN and LIMITED_ADMIN for the NETWORK_OPERATOR profile (stations
are the operator's network). Whoever held ADMIN on the root group (the operator: the first
administrator, its API users) keeps running the network: it is granted NETWORK_OPERATOR there.
No schema change.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_ROOT_API_ADMINS = """
    SELECT p.api_user_id FROM api_user_profiles p
    JOIN api_users a ON a.id = p.api_user_id
    JOIN groups g ON g.id = a.group_id
    WHERE g.parent_id IS NULL AND p.profile_id = 'ADMIN'
"""


def upgrade() -> None:
    op.execute(
        """
        INSERT INTO user_roles (user_id, group_id, profile_id)
        SELECT r.user_id, r.group_id, 'NETWORK_OPERATOR' FROM user_roles r
        JOIN groups g ON g.id = r.group_id
        WHERE g.parent_id IS NULL AND r.profile_id = 'ADMIN' AND NOT EXISTS (
            SELECT 1 FROM user_roles x
            WHERE x.user_id = r.user_id AND x.group_id = r.group_id AND x.profile_id = 'NETWORK_OPERATOR'
        )
        """
    )
    # Profile sets are cached per (API user, roles_version): bump it with the change.
    op.execute(
        f"""
        UPDATE api_users SET roles_version = roles_version + 1 WHERE id IN ({_ROOT_API_ADMINS})
        AND id NOT IN (SELECT api_user_id FROM api_user_profiles WHERE profile_id = 'NETWORK_OPERATOR')
        """
    )
    op.execute(
        f"""
        INSERT INTO api_user_profiles (api_user_id, profile_id)
        SELECT q.api_user_id, 'NETWORK_OPERATOR' FROM ({_ROOT_API_ADMINS}) q
        WHERE q.api_user_id NOT IN (SELECT api_user_id FROM api_user_profiles WHERE profile_id = 'NETWORK_OPERATOR')
        """
    )


def downgrade() -> None:
    # The older catalog does not know the profile; ADMIN carries the right again there.
    op.execute(
        """
        UPDATE api_users SET roles_version = roles_version + 1
        WHERE id IN (SELECT api_user_id FROM api_user_profiles WHERE profile_id = 'NETWORK_OPERATOR')
        """
    )
    op.execute("DELETE FROM api_user_profiles WHERE profile_id = 'NETWORK_OPERATOR'")
    op.execute("DELETE FROM user_roles WHERE profile_id = 'NETWORK_OPERATOR'")
