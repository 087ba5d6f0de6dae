"""Callbacks of a device type: create, change, enable, choose the downlink one, delete. Every
template is compiled on save with the one template engine (delivery/templates.py), so a callback
that is stored renders; secrets (header values, URL credentials, the signing secret) are sealed
with the keyring and come back masked."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.delivery import templates
from heron.delivery.models import Callback
from heron.delivery.ssrf import IPNetwork, check_literal_host, check_url_syntax
from heron.errors import InvalidInput, NotFound
from heron.keys import Keyring
from heron.messages.decoding import grammar_of
from heron.messages.grammar import parse_grammar
from heron.registry import device_types
from heron.registry.models import DeviceType
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.owned import KEEP

TYPES = {0: "DATA", 1: "SERVICE", 2: "ERROR"}
SUBTYPES = {0: "STATUS", 2: "UPLINK", 3: "BIDIR", 4: "ACKNOWLEDGE", 5: "REPEATER", 6: "DATA_ADVANCED"}
TYPE_IDS = {v: k for k, v in TYPES.items()}
SUBTYPE_IDS = {v: k for k, v in SUBTYPES.items()}
VALID_SUBTYPES: dict[str, set[str | None]] = {
    "DATA": {"UPLINK", "BIDIR"},
    "SERVICE": {"STATUS", "ACKNOWLEDGE", "REPEATER", "DATA_ADVANCED"},
    "ERROR": {None},
}
CHANNELS = ("URL", "BATCH_URL", "EMAIL")
METHODS = {"URL": ("GET", "POST", "PUT"), "BATCH_URL": ("POST", "PUT")}
CONTENT_CONTEXTS = {"application/x-www-form-urlencoded": "form", "application/json": "json", "text/plain": "text"}
DEFAULT_CONTENT_TYPE = "application/x-www-form-urlencoded"
MASK = "****"
HEADERS_PURPOSE = "callback.headers"
CREDENTIALS_PURPOSE = "callback.url_credentials"
SIGNING_PURPOSE = "callback.signing"
MAX_HEADERS = 20

# One address of a recipient list: no whitespace or control character (a mail header is one line).
_ADDRESS = re.compile(r"[^\s@\x00-\x1f\x7f-\x9f,]+@[^\s@\x00-\x1f\x7f-\x9f,]+")


@dataclass
class CallbackFields:
    """What a create or update may set. KEEP = not given; None = unset (optional fields)."""

    channel: Any = KEEP
    callback_type: Any = KEEP  # int (api.md enum)
    callback_subtype: Any = KEEP  # int | None
    enabled: Any = KEEP
    send_duplicate: Any = KEEP
    payload_config: Any = KEEP
    url: Any = KEEP
    http_method: Any = KEEP
    headers: Any = KEEP  # dict[str, str]; a value of MASK keeps the stored one
    send_sni: Any = KEEP
    body_template: Any = KEEP
    content_type: Any = KEEP
    line_pattern: Any = KEEP
    recipient: Any = KEEP
    subject: Any = KEEP
    message: Any = KEEP
    signing_secret: Any = KEEP


@dataclass
class CallbackView:
    callback: Callback
    device_type: DeviceType
    headers: dict[str, str] = field(default_factory=dict)  # masked


def _given(value: Any) -> bool:
    return value is not KEEP


def custom_fields(cb: Callback, dt: DeviceType) -> tuple[str, ...]:
    """The `customData#` names a callback may use: its own payload config, else its device type's
    custom grammar."""
    if cb.payload_config:
        return grammar_of(cb.payload_config).names
    if dt.payload_type == 3 and dt.payload_config:
        return grammar_of(dt.payload_config).names
    return ()


def _split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without `user:password@`, and the credentials (sent as HTTP Basic)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), userinfo


def shown_url(cb: Callback) -> str | None:
    """The URL as read back: credentials masked (`****@`; sent back as is, they stay)."""
    if cb.url is None or cb.url_credentials is None:
        return cb.url
    parts = urlsplit(cb.url)
    return urlunsplit((parts.scheme, f"{MASK}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def stored_headers(keyring: Keyring, cb: Callback) -> dict[str, str]:
    if not cb.headers:
        return {}
    loaded: dict[str, str] = json.loads(keyring.decrypt(cb.headers, HEADERS_PURPOSE))
    return loaded


def stored_credentials(keyring: Keyring, cb: Callback) -> str | None:
    return keyring.decrypt(cb.url_credentials, CREDENTIALS_PURPOSE).decode() if cb.url_credentials else None


def stored_signing_secret(keyring: Keyring, cb: Callback) -> str | None:
    return keyring.decrypt(cb.signing_secret, SIGNING_PURPOSE).decode() if cb.signing_secret else None


def _apply(keyring: Keyring, cb: Callback, f: CallbackFields) -> dict[str, object]:
    changes: dict[str, object] = {}
    if _given(f.channel):
        if f.channel not in CHANNELS:
            raise InvalidInput.field("channel", f"must be one of {', '.join(CHANNELS)}")
        cb.channel = changes["channel"] = f.channel
    if _given(f.callback_type):
        if f.callback_type not in TYPES:
            raise InvalidInput.field("callbackType", "must be 0 (DATA), 1 (SERVICE) or 2 (ERROR)")
        cb.callback_type = changes["callbackType"] = TYPES[f.callback_type]
    if _given(f.callback_subtype):
        if f.callback_subtype is not None and f.callback_subtype not in SUBTYPES:
            names = ", ".join(f"{k} ({v})" for k, v in SUBTYPES.items())
            raise InvalidInput.field("callbackSubtype", f"must be one of {names}")
        cb.callback_subtype = changes["callbackSubtype"] = (
            SUBTYPES[f.callback_subtype] if f.callback_subtype is not None else None
        )
    for attr, wire in (
        ("enabled", "enabled"),
        ("send_duplicate", "sendDuplicate"),
        ("send_sni", "sendSni"),
    ):
        value = getattr(f, attr)
        if _given(value):
            setattr(cb, attr, bool(value))
            changes[wire] = bool(value)
    for attr, wire in (
        ("payload_config", "payloadConfig"),
        ("http_method", "httpMethod"),
        ("body_template", "bodyTemplate"),
        ("content_type", "contentType"),
        ("line_pattern", "linePattern"),
        ("recipient", "recipient"),
        ("subject", "subject"),
        ("message", "message"),
    ):
        value = getattr(f, attr)
        if _given(value):
            setattr(cb, attr, value if value != "" else None)
            changes[wire] = value
    if _given(f.url):
        if f.url is None:
            cb.url = cb.url_credentials = None
        else:
            bare, credentials = _split_credentials(f.url)
            if credentials == MASK and cb.url_credentials:
                credentials = stored_credentials(keyring, cb)  # the masked URL read back: unchanged
            cb.url = bare
            cb.url_credentials = (
                keyring.encrypt(credentials.encode(), CREDENTIALS_PURPOSE) if credentials is not None else None
            )
        changes["url"] = shown_url(cb)
    if _given(f.headers):
        given = f.headers or {}
        if not isinstance(given, dict) or len(given) > MAX_HEADERS:
            raise InvalidInput.field("headers", f"must be an object of at most {MAX_HEADERS} name: value pairs")
        old = stored_headers(keyring, cb)
        merged = {str(k): (old.get(k, "") if v == MASK else str(v)) for k, v in given.items()}
        cb.headers = keyring.encrypt(json.dumps(merged).encode(), HEADERS_PURPOSE) if merged else None
        changes["headers"] = sorted(merged)
    if _given(f.signing_secret):
        secret = f.signing_secret
        if secret is not None and not (isinstance(secret, str) and 24 <= len(secret) <= 200):
            raise InvalidInput.field("signingSecret", "must be 24 to 200 characters (e.g. whsec_<base64>)")
        cb.signing_secret = keyring.encrypt(secret.encode(), SIGNING_PURPOSE) if secret else None
        changes["signingSecret"] = MASK if secret else None
    return changes


def _check(keyring: Keyring, cb: Callback, dt: DeviceType, allow: tuple[IPNetwork, ...] | None = None) -> None:
    """The whole callback, as it would be stored: refused with the field and the reason. With
    `allow` (the operator's allow-list), a URL whose host is a refused address is refused too."""
    valid = VALID_SUBTYPES[cb.callback_type]
    if cb.callback_subtype not in valid:
        allowed = ", ".join(f"{SUBTYPE_IDS[s]} ({s})" for s in sorted(s for s in valid if s)) or "none (omit it)"
        raise InvalidInput.field("callbackSubtype", f"a {cb.callback_type} callback takes {allowed}")
    if cb.payload_config is not None:
        if cb.callback_type != "DATA":
            raise InvalidInput.field("payloadConfig", "is for DATA callbacks only")
        parse_grammar(cb.payload_config, "payloadConfig")
    available = templates.variables_for(cb.callback_type, cb.callback_subtype, custom_fields=custom_fields(cb, dt))
    if cb.channel in METHODS:
        if not cb.url:
            raise InvalidInput.field("url", f"is required for a {cb.channel} callback")
        check_url_syntax(cb.url, "url")
        if allow is not None:
            check_literal_host(cb.url, allow, "url")
        templates.compile_template(cb.url, "url", available, "url")
        method = cb.http_method or "POST"
        if method not in METHODS[cb.channel]:
            raise InvalidInput.field("httpMethod", f"must be one of {', '.join(METHODS[cb.channel])}")
        cb.http_method = method
        for name, value in stored_headers(keyring, cb).items():
            templates.check_header_name(name, "headers")
            templates.compile_template(value, "header", available, f"headers.{name}")
        cb.recipient = cb.subject = cb.message = None
    if cb.channel == "URL":
        cb.line_pattern = None
        if cb.http_method == "GET":
            cb.body_template = cb.content_type = None
        else:
            cb.content_type = cb.content_type or DEFAULT_CONTENT_TYPE
            context = CONTENT_CONTEXTS.get(cb.content_type)
            if context is None:
                raise InvalidInput.field("contentType", f"must be one of {', '.join(CONTENT_CONTEXTS)}")
            if cb.body_template is not None:
                templates.compile_template(cb.body_template, context, available, "bodyTemplate")
        if cb.callback_subtype == "DATA_ADVANCED" and (cb.content_type != "application/json" or not cb.body_template):
            raise InvalidInput.field(
                "bodyTemplate", "a DATA_ADVANCED callback needs a JSON body (contentType application/json)"
            )
    elif cb.channel == "BATCH_URL":
        if cb.callback_type != "DATA" or cb.callback_subtype != "UPLINK":
            raise InvalidInput.field("channel", "BATCH_URL carries DATA UPLINK callbacks only")
        if not cb.line_pattern:
            raise InvalidInput.field("linePattern", "is required for a BATCH_URL callback")
        templates.compile_template(cb.line_pattern, "text", available, "linePattern")
        cb.body_template = cb.content_type = None
    elif cb.channel == "EMAIL":
        if not cb.recipient or not all(_ADDRESS.fullmatch(r.strip()) for r in cb.recipient.split(",")):
            raise InvalidInput.field("recipient", "must be one or more e-mail addresses separated by commas")
        templates.compile_template(cb.subject or "", "header", available, "subject")
        templates.compile_template(cb.message or "", "text", available, "message")
        cb.url = cb.url_credentials = cb.http_method = cb.headers = cb.body_template = cb.content_type = None
        cb.line_pattern = None
    if cb.downlink_hook and not (cb.callback_type == "DATA" and cb.callback_subtype == "BIDIR" and cb.channel == "URL"):
        cb.downlink_hook = False


def _view(keyring: Keyring, cb: Callback, dt: DeviceType) -> CallbackView:
    return CallbackView(cb, dt, {k: MASK for k in stored_headers(keyring, cb)})


def _load(
    session: Session, actor: Actor, device_type_id: int, callback_id: int | None, action: str
) -> tuple[DeviceType, str, Callback | None]:
    """The device type (its group path for the audit log) and, if named, its callback."""
    dt_view = device_types.get(session, actor, device_type_id)
    actor.require(action, dt_view.group.path, "device type")
    if callback_id is None:
        return dt_view.device_type, dt_view.group.path, None
    cb = session.get(Callback, callback_id)
    if cb is None or cb.device_type_id != device_type_id:
        raise NotFound("callback not found")
    return dt_view.device_type, dt_view.group.path, cb


def list_callbacks(session: Session, actor: Actor, keyring: Keyring, device_type_id: int) -> list[CallbackView]:
    dt, _path, _ = _load(session, actor, device_type_id, None, "callback:read")
    rows = session.scalars(select(Callback).where(Callback.device_type_id == device_type_id).order_by(Callback.id))
    return [_view(keyring, cb, dt) for cb in rows]


def create(
    session: Session,
    actor: Actor,
    keyring: Keyring,
    device_type_id: int,
    fields: CallbackFields,
    *,
    allow: tuple[IPNetwork, ...] | None = None,
) -> CallbackView:
    """A new callback. The API passes the operator's allow-list (`allow`): a URL whose literal
    host is a refused address is refused naming `url` (a name is checked when sending)."""
    dt, path, _ = _load(session, actor, device_type_id, None, "callback:write")
    for attr, wire in (("channel", "channel"), ("callback_type", "callbackType"), ("enabled", "enabled")):
        if not _given(getattr(fields, attr)):
            raise InvalidInput.field(wire, "field required")
    now = utcnow()
    cb = Callback(
        device_type_id=dt.id,
        callback_subtype=None,
        dead=False,
        downlink_hook=False,
        send_duplicate=False,
        send_sni=True,
        created_at=now,
        created_by=actor.ref,
    )
    changes = _apply(keyring, cb, fields)
    _check(keyring, cb, dt, allow)
    session.add(cb)
    session.flush()
    audit.record(session, actor, "create", cb, "callback", path, changes)
    return _view(keyring, cb, dt)


def update_callback(
    session: Session,
    actor: Actor,
    keyring: Keyring,
    device_type_id: int,
    callback_id: int,
    fields: CallbackFields,
    *,
    allow: tuple[IPNetwork, ...] | None = None,
) -> CallbackView:
    """A change; with `allow`, a URL given is checked as on create (a stored URL the allow-list
    no longer opens does not block other changes: its deliveries fail, listed and alerted)."""
    dt, path, cb = _load(session, actor, device_type_id, callback_id, "callback:write")
    assert cb is not None
    changes = _apply(keyring, cb, fields)
    _check(keyring, cb, dt, allow if _given(fields.url) else None)
    cb.updated_at, cb.updated_by = utcnow(), actor.ref
    audit.record(session, actor, "update", cb, "callback", path, changes)
    return _view(keyring, cb, dt)


def enable(session: Session, actor: Actor, device_type_id: int, callback_id: int, enabled: bool) -> None:
    _dt, path, cb = _load(session, actor, device_type_id, callback_id, "callback:write")
    assert cb is not None
    cb.enabled, cb.updated_at, cb.updated_by = enabled, utcnow(), actor.ref
    if enabled:
        cb.dead, cb.dead_since = False, None  # re-enabling closes the circuit: deliveries flow again
    audit.record(session, actor, "update", cb, "callback", path, {"enabled": enabled})


def select_downlink(session: Session, actor: Actor, device_type_id: int, callback_id: int) -> None:
    """Make a DATA BIDIR URL callback the device type's downlink callback (the others stop being it)."""
    dt, path, cb = _load(session, actor, device_type_id, callback_id, "callback:write")
    assert cb is not None
    if not (cb.callback_type == "DATA" and cb.callback_subtype == "BIDIR" and cb.channel == "URL"):
        raise InvalidInput.field(
            "callbackId", "only a DATA BIDIR callback on the URL channel can answer downlinks", "path"
        )
    session.execute(update(Callback).where(Callback.device_type_id == dt.id).values(downlink_hook=False))
    cb.downlink_hook, cb.updated_at, cb.updated_by = True, utcnow(), actor.ref
    audit.record(session, actor, "update", cb, "callback", path, {"downlinkHook": True})


def delete(session: Session, actor: Actor, device_type_id: int, callback_id: int) -> None:
    _dt, path, cb = _load(session, actor, device_type_id, callback_id, "callback:write")
    assert cb is not None
    audit.record(session, actor, "delete", cb, "callback", path, {})
    session.delete(cb)
