"""Registration tokens: the second factor of the Senet onboarding API (`register`, and an AppKey
change through `activate`). A token is six digits, single use, valid ten minutes, bound to one
group (usable for applications in that group or its subgroups) and issued to a person by the
CLI or the GUI; an API key alone can never mint one.

Only a hash of the code is stored, salted with the group id. Six digits are guessable offline, so
what protects a token is its short life and single use: `consume` takes it with one conditional
UPDATE (`... WHERE used_at IS NULL AND expires_at > now`), so two concurrent uses cannot both
succeed, on either database."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.errors import Forbidden, InvalidInput
from heron.registry.models import RegistrationToken
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.models import Group
from heron.tenancy.owned import owning_group

VALIDITY = timedelta(minutes=10)
_CODE = re.compile(r"[0-9]{6}")


def code_hash(group_id: int, code: str) -> str:
    return hashlib.sha256(f"heron-registration-token:{group_id}:{code}".encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    token: RegistrationToken
    code: str  # shown once
    group: Group

    @property
    def expires_at(self) -> datetime:
        return self.token.expires_at


def create(session: Session, actor: Actor, *, group_id: int, issued_to: str) -> Issued:
    """Issue a token for `group_id` to a person. API users are refused: a token proves a person
    took part, so a key that could mint its own would prove nothing."""
    if actor.kind == "api_user":
        raise Forbidden("registration tokens are issued to people (GUI or CLI), never to an API key")
    group = owning_group(session, actor, group_id, "device:write")
    issued_to = issued_to.strip()
    if not 1 <= len(issued_to) <= 250:
        raise InvalidInput.field("issuedTo", "must be 1 to 250 characters")
    now = utcnow()
    while True:  # no two live tokens of a group share a code
        code = f"{secrets.randbelow(1_000_000):06d}"
        digest = code_hash(group.id, code)
        live = session.scalar(
            select(RegistrationToken.id).where(
                RegistrationToken.code_hash == digest,
                RegistrationToken.used_at.is_(None),
                RegistrationToken.expires_at > now,
            )
        )
        if live is None:
            break
    token = RegistrationToken(
        group_id=group.id, code_hash=digest, issued_to=issued_to, created_at=now, expires_at=now + VALIDITY
    )
    session.add(token)
    session.flush()
    audit.record(session, actor, "issue", token, "registration_token", group.path, {"issuedTo": issued_to})
    return Issued(token, code, group)


def well_formed(code: str) -> bool:
    return bool(_CODE.fullmatch(code))


def consume(session: Session, code: str, group_path: str, used_by: str) -> bool:
    """Use a token for an application in the group at `group_path`: a live token issued for that
    group or one of its ancestors. True when taken (it can never be taken again)."""
    if not well_formed(code):
        return False
    now = utcnow()
    hashes = [code_hash(int(gid), code) for gid in group_path.strip("/").split("/") if gid]
    live = (
        RegistrationToken.code_hash.in_(hashes),
        RegistrationToken.used_at.is_(None),
        RegistrationToken.expires_at > now,
    )
    candidate = select(RegistrationToken.id).where(*live).order_by(RegistrationToken.id).limit(1).scalar_subquery()
    taken = session.execute(
        update(RegistrationToken)
        .where(RegistrationToken.id == candidate, *live)
        .values(used_at=now, used_by=used_by)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]
