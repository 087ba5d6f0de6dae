"""A Senet onboarding call: the application it acts on and its checked query parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from heron.errors import FieldError, InvalidInput
from heron.registry import bulk, device_profiles, registration_tokens
from heron.registry.device_types import current_contracts
from heron.registry.identifiers import is_hex
from heron.registry.models import DeviceType
from heron.tenancy.access import Actor
from heron.tenancy.models import Group

REGISTER, ACTIVATE, DEACTIVATE, UPDATE = "senet.register", "senet.activate", "senet.deactivate", "senet.update"
KINDS = (REGISTER, ACTIVATE, DEACTIVATE, UPDATE)
MGMT_PREFIX, UPDATE_PREFIX = "DevMgmtJobReq", "DevUpdateJobReq"
STATUS_KEPT = timedelta(minutes=15)
MAX_ROWS = 100_000
TAG_OPERATIONS = ("APPEND", "REPLACE", "DELETE")
APP_KEY_PURPOSE = "devices.app_key"
JOIN_EUI_PURPOSE = "devices.join_eui"
PROF_ID_PURPOSE = "devices.prof_id"

_TAG_SPLIT = re.compile(r"[,;]")
_LORAWAN = bulk.LORAWAN


def invalid(parameter: str, why: str) -> InvalidInput:
    """The Senet family's 400: `{"message"}` naming the parameter."""
    return InvalidInput(f"Invalid parameter: {parameter} ({why})", [FieldError(parameter, why, "query")])


# -- the application and the call's parameters ------------------------------------------------------
@dataclass(frozen=True)
class Application:
    """A LORAWAN device type seen as a Senet application."""

    device_type_id: int
    app_eui: str
    join_eui: str | None
    group_id: int
    group_path: str
    contract_id: int | None
    profile_id: int | None
    automatic_renewal: bool
    contract_ids: tuple[int, ...]


def parse_eui(value: str, parameter: str) -> str:
    if not is_hex(value, 16):
        raise invalid(parameter, "must be 16 hex digits (an EUI-64)")
    return value.upper()


def parse_int(value: str, parameter: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 10 or not 0 < int(value) < 2**31:
        raise invalid(parameter, "must be a positive integer")
    return int(value)


def application(session: Session, actor: Actor, app_eui: str | None, action: str = "device:write") -> Application:
    """The application a call acts on: `appEui`, else the one the API key is bound to. An
    unknown application and one of another tenant answer alike."""
    if app_eui is None:
        if actor.bound_device_type_id is None:
            raise invalid("appEui", "required: this API key is not bound to an application")
        cond = DeviceType.id == actor.bound_device_type_id
    else:
        cond = DeviceType.app_eui == parse_eui(app_eui, "appEui")
    row = session.execute(
        select(DeviceType, Group.path).join(Group, Group.id == DeviceType.group_id).where(cond)
    ).first()
    if row is None or row[0].network != _LORAWAN or not actor.can("device:read", row[1]):
        raise invalid("appEui", "no such application")
    dt, path = row
    actor.require(action, path, "application")
    assert dt.app_eui is not None
    return Application(
        dt.id,
        dt.app_eui,
        dt.join_eui,
        dt.group_id,
        path,
        dt.contract_id,
        dt.device_profile_id,
        dt.automatic_renewal,
        tuple(current_contracts(session, [dt.id])[dt.id]),
    )


def parse_tags(value: object) -> list[str]:
    """Tags as Senet sends them: a string separated by `,` (the tables) or `;` (the update
    example), or a JSON list. Raises ValueError."""
    if isinstance(value, str):
        parts: list[Any] = _TAG_SPLIT.split(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = [p for v in value for p in _TAG_SPLIT.split(v)]
    else:
        raise ValueError("must be a string of tags separated by , or ;")
    tags = list(dict.fromkeys(t.strip() for t in parts if t.strip()))
    if any("\x00" in t or len(t) > 100 for t in tags):
        raise ValueError("each tag must be at most 100 characters, without NUL")
    if len(",".join(tags)) > 4000:
        raise ValueError("must be at most 4000 characters in all")
    return tags


def tags_text(tags: list[str]) -> str | None:
    return ",".join(tags) if tags else None


@dataclass
class Call:
    """A validated call: what every kind records in its job params."""

    app: Application
    join_eui: str | None = None
    contract_id: int | None = None
    prof_id: int | None = None
    tags: list[str] | None = None
    tags_operation: str | None = None
    token: str | None = None


def check_call(
    session: Session,
    actor: Actor,
    *,
    app_eui: str | None,
    join_eui: str | None = None,
    contract_id: str | None = None,
    prof_id: str | None = None,
    tags: str | None = None,
    tags_operation: str | None = None,
    token: str | None = None,
) -> Call:
    """Parse and check a call's query parameters (400 naming the first bad one)."""
    app = application(session, actor, app_eui)
    call = Call(app)
    if join_eui is not None:
        call.join_eui = parse_eui(join_eui, "joinEui")
    if contract_id is not None:
        call.contract_id = parse_int(contract_id, "contractId")
        if call.contract_id not in app.contract_ids:
            raise invalid("contractId", "not a contract of this application")
    if prof_id is not None:
        call.prof_id = parse_int(prof_id, "profId")
        group = session.get(Group, app.group_id)
        assert group is not None
        if device_profiles.usable_by(session, call.prof_id, group) is None:
            raise invalid("profId", "no such device profile for this application")
    if tags is not None:
        try:
            call.tags = parse_tags(tags)
        except ValueError as exc:
            raise invalid("tags", str(exc)) from None
    if tags_operation is not None:
        if tags_operation.upper() not in TAG_OPERATIONS:
            raise invalid("tagsOperation", "must be APPEND, REPLACE or DELETE")
        call.tags_operation = tags_operation.upper()
    if token is not None:
        if not registration_tokens.well_formed(token):
            raise invalid("token", "must be a six-digit number")
        call.token = token
    return call


def use_token(session: Session, actor: Actor, call: Call) -> None:
    assert call.token is not None
    if not registration_tokens.consume(session, call.token, call.app.group_path, actor.ref):
        raise invalid("token", "unknown, expired or already used, or issued for another group")
