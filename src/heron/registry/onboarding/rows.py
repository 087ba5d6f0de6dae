"""The stored rows of an onboarding job: validated, normalized and sealed at submission."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from heron.errors import InvalidInput
from heron.keys import Keyring
from heron.registry import bulk
from heron.registry.identifiers import is_hex
from heron.registry.onboarding.calls import APP_KEY_PURPOSE, parse_tags

# A stored row's keys. One letter each, as the rows of jobs already stored have them (a job's
# rows are one JSON document of up to 100,000 rows); read and written only through these names.
EUI = "d"  # the DevEUI, upper-case (null in an error row naming none)
ERROR = "e"  # the message a refused row reports
SEALED_APP_KEY = "k"  # the AppKey, a keyring ciphertext (APP_KEY_PURPOSE)
DEV_TYPE = "t"  # the row's devType

_LORAWAN = bulk.LORAWAN


def sealer(keyring: Keyring) -> Callable[[str], str]:
    encrypt = keyring.encrypter(APP_KEY_PURPOSE)
    return lambda key: encrypt(key.encode())


def prepare_rows(
    rows: list[Any], *, app_key: str, seal: Callable[[str], str] | None, settings: bool = True
) -> list[dict[str, Any]]:
    """The stored form of the request's rows. `app_key`: "required" (register), "optional"
    (activate) or "ignored". A bad row becomes `{ERROR: message, EUI: devEui or null}`; a good one
    `{EUI: devEui, SEALED_APP_KEY: sealed AppKey, "lat", "lng", "tags": [...], DEV_TYPE: devType}`
    with only the keys given. Later rows repeating a DevEUI are errors (the first one counts)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            out.append({ERROR: f"Row {n}: must be a JSON object with a devEui.", EUI: None})
            continue
        raw = row.get("devEui")
        if not isinstance(raw, str) or not is_hex(raw, 16):
            shown = json.dumps(raw)[:40] if raw is not None else "missing"
            out.append({ERROR: f"Row {n}: devEui must be 16 hex digits (an EUI-64), got {shown}.", EUI: None})
            continue
        eui = raw.upper()
        if eui in seen:
            out.append(
                {ERROR: f"DevEUI: {eui} appears more than once in the request; its first row is used.", EUI: eui}
            )
            continue
        seen.add(eui)
        good: dict[str, Any] = {EUI: eui}
        problem = None
        if app_key != "ignored":
            key = row.get("appKey")
            if key is None:
                if app_key == "required":
                    problem = f"The AppKey for DevEUI: {eui} is missing (32 hex digits)."
            elif not isinstance(key, str) or not is_hex(key, 32):
                problem = f"The AppKey for DevEUI: {eui} must be 32 hex digits (an AES-128 key)."
            elif seal is not None:
                good[SEALED_APP_KEY] = seal(key.upper())
        if settings and problem is None:
            problem = _settings(row, eui, good)
        out.append({ERROR: problem, EUI: eui} if problem else good)
    return out


def _settings(row: dict[str, Any], eui: str, good: dict[str, Any]) -> str | None:
    position = {name: row[name] for name in ("lat", "lng") if row.get(name) is not None}
    if position:
        try:
            good |= bulk.check_settings(_LORAWAN, position)
        except InvalidInput as exc:
            problem = exc.errors[0]
            return f"DevEUI: {eui}: {problem.field} {problem.message}."
    tags = row.get("tags")
    if tags is not None:
        try:
            good["tags"] = parse_tags(tags)
        except ValueError as exc:
            return f"DevEUI: {eui}: tags {exc}."
    dev_type = row.get("devType")
    if dev_type is not None:
        if not isinstance(dev_type, str) or not 1 <= len(dev_type) <= 100 or "\x00" in dev_type:
            return f"DevEUI: {eui}: devType must be 1 to 100 characters."
        good[DEV_TYPE] = dev_type
    return None
