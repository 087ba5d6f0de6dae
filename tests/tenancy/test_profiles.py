"""The profile catalog and its documentation stay in step."""

from __future__ import annotations

from pathlib import Path

from heron.tenancy.profiles import ACTIONS, PROFILES, profiles_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROFILES.md"


def test_profiles_doc_matches_catalog() -> None:
    assert DOC.read_text() == profiles_markdown(), "regenerate docs/PROFILES.md from heron.tenancy.profiles"


def test_limited_admin_is_admin_without_users_and_api_access() -> None:
    missing = PROFILES["ADMIN"].actions - PROFILES["LIMITED_ADMIN"].actions
    assert missing == {"user:read", "user:write", "api_user:read", "api_user:write"}


def test_every_profile_action_is_documented() -> None:
    for profile in PROFILES.values():
        assert profile.actions <= set(ACTIONS)
        assert "group:read" in profile.actions  # every role lets its holder see the groups it applies to
