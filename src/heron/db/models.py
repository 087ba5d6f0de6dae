"""Imports every model so that `Base.metadata` knows all tables (for Alembic and tests)."""

from heron.db.base import Base
from heron.tenancy import models as tenancy_models

__all__ = ["Base", "tenancy_models"]
