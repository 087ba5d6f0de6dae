"""Authentication: API secrets (every request checks the database once, so a revoked or renewed
secret fails at once in every process), GUI sessions, and sign-in throttling."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.db.driver import upsert_insert
from heron.db.engine import Database
from heron.db.fastpath import FastQuery
from heron.tenancy.access import Actor, Role
from heron.tenancy.api_users import hash_secret
from heron.tenancy.models import ApiUser, LoginThrottle, User, WebSession
from heron.tenancy.passwords import verify_password
from heron.tenancy.users import actor_for

log = logging.getLogger("heron.auth")

# The one query on every authenticated API request: the credential, its group path, the
# version of its profile list (profiles are cached per version) and the application it is bound
# to (Senet calls without appEui).
_API_AUTH = FastQuery(
    "SELECT a.id, a.name, a.roles_version, g.id, g.path, a.device_type_id FROM api_users a "
    "JOIN groups g ON g.id = a.group_id WHERE a.secret_hash = :h"
)
# Profiles with the version they belong to, read together so the cache is never mislabelled.
_API_PROFILES = FastQuery(
    "SELECT a.roles_version, p.profile_id FROM api_users a "
    "LEFT JOIN api_user_profiles p ON p.api_user_id = a.id WHERE a.id = :id"
)


class Authenticator:
    """Per-process: caches profile sets by (API user, roles_version) and coalesces last-used
    times, flushed at most every `flush_seconds` (never a write per request)."""

    def __init__(self, db: Database, flush_seconds: float = 30.0) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self._profiles: dict[tuple[int, int], frozenset[str]] = {}
        self._last_used: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def authenticate_secret(self, secret: str, login: str | None = None) -> Actor | None:
        if not secret or len(secret) > 200:
            return None
        row = _API_AUTH.first(self.db, {"h": hash_secret(secret)})
        if row is None:
            return None
        api_user_id, name, version, group_id, path, bound = row
        if login is not None and login != str(api_user_id):
            return None
        profiles = self._profiles.get((api_user_id, version))
        if profiles is None:
            rows = _API_PROFILES.all(self.db, {"id": api_user_id})
            if not rows:
                return None  # revoked between the two reads
            profiles = frozenset(pid for _v, pid in rows if pid is not None)
            if len(self._profiles) > 10_000:
                self._profiles.clear()
            self._profiles[(api_user_id, rows[0][0])] = profiles
        with self._lock:  # flush() swaps the dict under this lock
            self._last_used[api_user_id] = time.time()
        return Actor("api_user", api_user_id, name, (Role(group_id, path, profiles),), bound)

    # -- last-used coalescing -------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()  # a previous stop() must not end the new flusher at once
            self._thread = threading.Thread(target=self._run, name="heron-last-used", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:
                log.exception("auth.last_used_flush_failed")

    def flush(self) -> int:
        with self._lock:
            pending, self._last_used = self._last_used, {}
        if not pending:
            return 0
        rows = [{"uid": uid, "t": datetime.fromtimestamp(ts, UTC)} for uid, ts in pending.items()]
        table = ApiUser.__table__  # Core executemany: one statement for all rows
        with self.db.write() as session:
            session.connection().execute(
                update(table)  # type: ignore[arg-type]
                .where(table.c.id == bindparam("uid"))
                .where(table.c.last_used_at.is_(None) | (table.c.last_used_at < bindparam("t")))
                .values(last_used_at=bindparam("t")),
                rows,
            )
        return len(rows)


# -- GUI sessions ---------------------------------------------------------------------------
def _sign(secret: bytes, value: str) -> str:
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


def sign_token(secret: bytes, value: str) -> str:
    return f"{value}.{_sign(secret, value)}"


def unsign_token(secret: bytes, token: str) -> str | None:
    value, _, mac = token.rpartition(".")
    if not value or not hmac.compare_digest(mac, _sign(secret, value)):
        return None
    return value


@dataclass
class SignedIn:
    actor: Actor
    user: User
    csrf_token: str


def create_session(session: Session, user: User, max_age: int) -> tuple[str, str]:
    """Returns (session id for the cookie, its CSRF token)."""
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = utcnow()
    session.add(
        WebSession(
            id_hash=hashlib.sha256(sid.encode()).hexdigest(),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + timedelta(seconds=max_age),
        )
    )
    user.last_login_at = now
    return sid, csrf


def load_session(session: Session, sid: str) -> SignedIn | None:
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.id_hash == hashlib.sha256(sid.encode()).hexdigest())
    ).first()
    if row is None:
        return None
    web_session, user = row
    if web_session.expires_at <= utcnow() or user.disabled:
        return None
    return SignedIn(actor_for(session, user), user, web_session.csrf_token)


def end_session(session: Session, sid: str) -> None:
    web_session = session.get(WebSession, hashlib.sha256(sid.encode()).hexdigest())
    if web_session is not None:
        session.delete(web_session)


# -- sign-in with throttling ------------------------------------------------------------------
class LoginLocked(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after = retry_after


def _throttle_rows(session: Session, keys: list[str]) -> dict[str, LoginThrottle]:
    return {t.key: t for t in session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys)))}


def sign_in(
    session: Session, email: str, password: str, address: str, max_failures: int, lockout_seconds: int
) -> User | None:
    """Check a password; failures are counted per account and per address, and either key
    reaching `max_failures` within the lockout window locks sign-in for that window."""
    email = email.strip().lower()[:250]
    keys = [f"email:{email}", f"addr:{address}"]
    now = utcnow()
    rows = _throttle_rows(session, keys)
    for row in rows.values():
        if row.locked_until is not None and row.locked_until > now:
            raise LoginLocked(int((row.locked_until - now).total_seconds()) + 1)
    user = session.scalar(select(User).where(User.email == email))
    ok = verify_password(user.password_hash if user else None, password) and user is not None and not user.disabled
    if ok:
        for row in rows.values():
            if row.key.startswith("email:"):
                session.delete(row)
        return user
    window = timedelta(seconds=lockout_seconds)
    for row in _lock_throttle_rows(session, keys, now):
        if now - row.window_start > window:
            row.failures, row.window_start, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= max_failures:
            row.locked_until = now + window
    return None


def _lock_throttle_rows(session: Session, keys: list[str], now: datetime) -> list[LoginThrottle]:
    """The throttle rows of `keys`, created if missing and locked (in key order) until commit, so
    concurrent failures neither collide on insert nor overwrite each other's counts (PostgreSQL;
    SQLite writers are serialized by BEGIN IMMEDIATE)."""
    keys = sorted(keys)
    session.execute(
        upsert_insert(session, LoginThrottle)
        .values([{"key": k, "failures": 0, "window_start": now} for k in keys])
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return list(
        session.scalars(
            select(LoginThrottle)
            .where(LoginThrottle.key.in_(keys))
            .order_by(LoginThrottle.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )
