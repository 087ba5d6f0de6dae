"""Tenancy: groups, users, profiles, API access and the one permission check."""
