"""`heron db backup FILE`: a consistent online copy (SQLite backup API, or pg_dump)."""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url


class BackupFailed(RuntimeError):
    """The backup could not be taken; the message says why."""


def find_pg_tool(name: str) -> str | None:
    """`name` (pg_dump, pg_restore) from PATH, else from the newest Debian server install
    (/usr/lib/postgresql/<version>/bin), which is not on PATH without postgresql-client-common."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
        reverse=True,
    )
    return candidates[0] if candidates else None


def backup(url: str, target: Path) -> None:
    parsed = make_url(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise BackupFailed("an in-memory database cannot be backed up")
        if not Path(parsed.database).is_file():
            # sqlite3.connect would create an empty database and "back up" that.
            raise BackupFailed(f"no SQLite database at {parsed.database}")
        source = sqlite3.connect(parsed.database)
        dest = sqlite3.connect(str(target))
        try:
            with dest:
                source.backup(dest)
        finally:
            dest.close()
            source.close()
        return
    pg_dump = find_pg_tool("pg_dump")
    if pg_dump is None:
        raise BackupFailed("pg_dump not found (install the postgresql-client package)")
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    args = [pg_dump, "--format=custom", "--no-owner", f"--file={target}"]
    if parsed.host:
        args.append(f"--host={parsed.host}")
    if parsed.port:
        args.append(f"--port={parsed.port}")
    if parsed.username:
        args.append(f"--username={parsed.username}")
    host_query = parsed.query.get("host")
    if host_query:
        args.append(f"--host={host_query}")
    args.append(str(parsed.database))
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupFailed(f"pg_dump failed: {result.stderr.strip() or f'exit status {result.returncode}'}")
