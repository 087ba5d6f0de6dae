"""Imports every model so that `Base.metadata` knows all tables (for Alembic and tests)."""

from heron.db.base import Base
from heron.delivery import models as delivery_models
from heron.downlink import models as downlinks_models
from heron.events import models as events_models
from heron.jobs import models as jobs_models
from heron.messages import models as messages_models
from heron.network.sigfox import models as stations_models
from heron.registry import models as registry_models
from heron.tenancy import models as tenancy_models

__all__ = [
    "Base",
    "delivery_models",
    "downlinks_models",
    "events_models",
    "jobs_models",
    "messages_models",
    "registry_models",
    "stations_models",
    "tenancy_models",
]
