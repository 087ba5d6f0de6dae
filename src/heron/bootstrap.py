"""First start and every start: keys, migrations, the root group and the first administrator."""

from __future__ import annotations

import logging
import secrets
import sys
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from heron.config import Settings
from heron.db import migrate
from heron.db.engine import Database
from heron.keys import Keyring, load_keyring, load_session_secret
from heron.tenancy import groups, users
from heron.tenancy.access import SYSTEM
from heron.tenancy.models import User

log = logging.getLogger("heron.bootstrap")


@dataclass
class Prepared:
    db: Database
    keyring: Keyring
    session_secret: bytes


def prepare(settings: Settings, *, announce_password: bool = True) -> Prepared:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keyring = load_keyring(settings)
    session_secret = load_session_secret(settings)
    db = Database(settings.resolved_database_url)
    migrate.upgrade(db)
    try:
        created = _create_root_and_admin(db, settings)
    except IntegrityError:
        # Another process (a second replica starting at the same time) created them first.
        created = None
    if created is not None:
        email, password = created
        log.info("bootstrap.admin_created", extra={"email": email})
        if password is not None and announce_password:
            # Printed once, after commit, on the console only: it is not stored anywhere in clear.
            print(
                f"\n  Heron administrator created: {email}\n  password (shown once): {password}\n",
                file=sys.stderr,
                flush=True,
            )
    return Prepared(db, keyring, session_secret)


def _create_root_and_admin(db: Database, settings: Settings) -> tuple[str, str | None] | None:
    """Create the root group and the first administrator when missing; returns the admin's
    email and, when generated, its password."""
    with db.write() as session:
        root = groups.get_root(session) or groups.create_root(session)
        if session.scalar(select(User.id).limit(1)) is not None:
            return None
        email = settings.admin_email or "admin@heron.local"
        given = settings.admin_password.get_secret_value() if settings.admin_password else None
        password = given or secrets.token_urlsafe(18)
        session.flush()
        users.create(
            session,
            SYSTEM,
            email=email,
            first_name="Heron",
            last_name="Administrator",
            # The root's administrator is the operator: it owns the network (base stations) too.
            roles=[users.RoleGrant(root.id, ("ADMIN", "NETWORK_OPERATOR"))],
            password=password,
        )
    return email, None if given else password
