"""Database access: engine, sessions, base types and migrations. Nothing outside this package
knows which database it runs on."""

from heron.db.base import Base, TimestampMs, path_column_type
from heron.db.engine import Database

__all__ = ["Base", "Database", "TimestampMs", "path_column_type"]
