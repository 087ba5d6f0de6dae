"""The Alembic chain and the models describe the same schema (a model change without its
migration, or the reverse, fails here rather than on a customer's upgrade)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from heron.db.engine import Database
from heron.db.models import Base


def test_migrated_schema_has_no_difference_from_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
