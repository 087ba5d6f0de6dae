"""Imports every model so that `Base.metadata` knows all tables (for Alembic and tests)."""

from heron.db.base import Base
from heron.jobs import models as jobs_models
from heron.registry import models as registry_models
from heron.tenancy import models as tenancy_models

__all__ = ["Base", "jobs_models", "registry_models", "tenancy_models"]
