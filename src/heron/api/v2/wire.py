"""How objects look on the wire (Sigfox v2 shapes, times in epoch milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from heron.db.base import to_ms, utcnow
from heron.delivery.callbacks import MASK, SUBTYPE_IDS, TYPE_IDS, CallbackView, shown_url
from heron.messages.queries import MessageView
from heron.network.sigfox.stations import StationView
from heron.registry.bulk import DELETED, LORAWAN, TOKEN_OK
from heron.registry.contracts import AllocationView, ContractInfo, ContractView
from heron.registry.device_profiles import ProfileView
from heron.registry.device_types import DeviceTypeView
from heron.registry.devices import DeviceView
from heron.registry.models import Contract, Device, DeviceProfile
from heron.tenancy.groups import GroupRecord
from heron.tenancy.models import Group
from heron.tenancy.profiles import PROFILES


def min_group(group: GroupRecord) -> dict[str, Any]:
    return {"id": str(group.id), "name": group.name, "type": group.type, "level": group.depth}


def min_profile(profile_id: str) -> dict[str, Any]:
    return {"id": profile_id, "name": PROFILES[profile_id].name}


def group_page(members: list[Group], paths: dict[int, list[Group]], leaves: set[int]) -> list[dict[str, Any]]:
    """A page of groups; ancestors shared by the page are rendered once."""
    rendered: dict[int, dict[str, Any]] = {}
    out = []
    for g in members:
        path = []
        for a in paths[g.id]:
            if a.id not in rendered:
                rendered[a.id] = min_group(a)
            path.append(rendered[a.id])
        out.append(group(g, path=path, leaf=g.id in leaves))
    return out


def group(g: GroupRecord, *, path: Sequence[GroupRecord | dict[str, Any]], leaf: bool) -> dict[str, Any]:
    return {
        "id": str(g.id),
        "name": g.name,
        "nameCI": g.name_ci,
        "description": g.description,
        "type": g.type,
        "timezone": g.timezone,
        "level": g.depth,
        "path": [a if isinstance(a, dict) else min_group(a) for a in path],
        "leaf": leaf,
        "createdBy": g.created_by,
        "creationTime": to_ms(g.created_at),
        "lastEditedBy": g.updated_by,
        "lastEditionTime": to_ms(g.updated_at),
    }


def min_contract(c: Contract) -> dict[str, Any]:
    return {"id": str(c.id), "name": c.name}


def _stamps(obj: Any) -> dict[str, Any]:
    return {
        "creationTime": to_ms(obj.created_at),
        "createdBy": obj.created_by,
        "lastEditionTime": to_ms(obj.updated_at),
        "lastEditedBy": obj.updated_by,
    }


def contract_info(info: ContractInfo) -> dict[str, Any]:
    """The Sigfox `contractInfo` fields Heron keeps (api.md), as this caller sees the contract."""
    c = info.contract
    return {
        "id": str(c.id),
        "contractId": c.external_id or str(c.id),
        "name": c.name,
        "bidir": c.bidir,
        "maxUplinkFrames": c.max_uplink_frames,
        "maxDownlinkFrames": c.max_downlink_frames,
        "maxTokens": info.max_tokens,
        "tokenDuration": c.token_duration,
        "tokensInUse": info.tokens_in_use,
        "startTime": to_ms(c.start_at),
        "endTime": to_ms(c.end_at),
        "timezone": c.timezone,
        "options": [{"id": "geolocation", "parameters": {"level": 1}}] if c.geolocation else [],
        "group": min_group(info.group),
    }


def allocation(a: AllocationView) -> dict[str, Any]:
    target: dict[str, Any] = (
        {"deviceType": {"id": str(a.device_type.id), "name": a.device_type.name}}
        if a.device_type is not None
        else {"group": min_group(a.group)}
    )
    return target | {"maxTokens": a.allocation.max_tokens, "tokensInUse": a.allocation.tokens_in_use}


def contract(view: ContractView, allocations: list[AllocationView]) -> dict[str, Any]:
    c = view.contract
    return {
        "id": str(c.id),
        "contractId": c.external_id,
        "name": c.name,
        "group": min_group(view.group),
        "bidir": c.bidir,
        "maxTokens": c.max_tokens,
        "tokensInUse": c.tokens_in_use,
        "maxUplinkFrames": c.max_uplink_frames,
        "maxDownlinkFrames": c.max_downlink_frames,
        "tokenDuration": c.token_duration,
        "startTime": to_ms(c.start_at),
        "endTime": to_ms(c.end_at),
        "timezone": c.timezone,
        "geolocation": c.geolocation,
        "messageRetentionDays": c.message_retention_days,
        "allocations": [allocation(a) for a in allocations],
        **_stamps(c),
    }


def device_profile(view: ProfileView) -> dict[str, Any]:
    p = view.profile
    return {
        "id": str(p.id),
        "name": p.name,
        "group": min_group(view.group),
        "region": p.region,
        "macVersion": p.mac_version,
        "regParamsRevision": p.reg_params_revision,
        "deviceClass": p.device_class,
        "rx1Delay": p.rx1_delay,
        "rx2DataRate": p.rx2_data_rate,
        "rx2Frequency": p.rx2_frequency / 1_000_000,
        "adrEnabled": p.adr_enabled,
        "subBand": p.sub_band,
        **_stamps(p),
    }


def device_type(
    view: DeviceTypeView, contracts: dict[int, Contract], profiles: dict[int, DeviceProfile]
) -> dict[str, Any]:
    dt = view.device_type
    default = contracts.get(dt.contract_id) if dt.contract_id is not None else None
    profile = profiles.get(dt.device_profile_id) if dt.device_profile_id is not None else None
    return {
        "id": str(dt.id),
        "name": dt.name,
        "description": dt.description,
        "group": min_group(view.group),
        "network": dt.network,
        "contract": min_contract(default) if default is not None else None,
        "contracts": [min_contract(contracts[c]) for c in view.contract_ids if c in contracts],
        "keepAlive": dt.keep_alive,
        "alertEmail": dt.alert_email,
        "downlinkMode": dt.downlink_mode,
        "downlinkDataString": dt.downlink_data_string,
        "payloadType": dt.payload_type,
        "payloadConfig": dt.payload_config,
        "automaticRenewal": dt.automatic_renewal,
        "appEui": dt.app_eui,
        "joinEui": dt.join_eui,
        "deviceProfile": {"id": str(profile.id), "name": profile.name} if profile is not None else None,
        **_stamps(dt),
    }


# Sigfox v2 `state`: 0 OK, 2 OFF_CONTRACT, 3 DISABLED, 5 DELETED, 6 SUSPENDED, 7 NOT_ACTIVABLE
# (see ARCHITECTURE.md).
def device_state(view: DeviceView) -> int:
    d = view.device
    if d.lifecycle == DELETED:
        return 5
    if d.lifecycle == "DEACTIVATED":
        return 3
    if d.suspended:
        return 6
    if d.token_state == TOKEN_OK:
        return 0
    return 2 if d.activable else 7


def renewal_status(d: Device) -> int:
    """Sigfox `automaticRenewalStatus`: 2 RENEWED (renewed at least once and still held),
    3 ENDED (the token reached its end and was given back), else 0 ALLOWED / 1 NOT_ALLOWED."""
    if d.token_state == TOKEN_OK and d.token_renewed_at is not None:
        return 2
    if d.token_state != TOKEN_OK and d.token_end_at is not None and d.token_end_at <= utcnow():
        return 3
    return 0 if d.automatic_renewal else 1


def device(view: DeviceView, secrets: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The api.md device object; `secrets` (single GET with `device:write`) adds the PAC and,
    for LoRaWAN, joinEui and profId. Never the NAK or the AppKey."""
    d, dt = view.device, view.device_type
    has_token = d.token_state == TOKEN_OK
    out: dict[str, Any] = {
        "id": d.identifier,
        "name": d.name,
        "network": d.network,
        "lifecycle": d.lifecycle,
        "state": device_state(view),
        "comState": d.com_state,
        "creationTime": to_ms(d.created_at),
        "activationTime": to_ms(d.activated_at),
        "automaticRenewal": d.automatic_renewal,
        "automaticRenewalStatus": renewal_status(d),
        "deviceType": {"id": str(dt.id), "name": dt.name},
        "contract": min_contract(view.contract) if view.contract is not None else None,
        "group": min_group(view.group),
        "location": {"lat": d.lat, "lng": d.lng} if d.lat is not None and d.lng is not None else None,
        "sequenceNumber": d.sequence_number,
        "lastCom": to_ms(d.last_seen_at),
        "lastMessagePurge": to_ms(d.messages_purged_at),
        "lqi": 4,
        "token": {
            "state": 0 if has_token else 1,
            "detailMessage": "Valid" if has_token else "Off Contract",
            "end": to_ms(d.token_end_at) if has_token else None,
            "freeMessages": 0,
            "freeMessagesSent": 0,
        },
        "activable": d.activable,
        "prototype": d.prototype,
        "productCertificate": {"key": d.product_certificate} if d.product_certificate else None,
        "modemCertificate": {"key": d.modem_certificate} if d.modem_certificate else None,
        "devType": d.dev_type,
        **_stamps(d),
    }
    if d.unsubscription_at is not None:  # absent, not null, without one (typed int64 in the document)
        out["unsubscriptionTime"] = to_ms(d.unsubscription_at)
        if has_token:
            out["token"]["unsubscriptionTime"] = out["unsubscriptionTime"]
    if d.network == LORAWAN:
        out["devEui"] = d.identifier
        out["tags"] = d.tags
    if secrets is not None:
        out["pac"] = secrets.get("pac")
        if d.network == LORAWAN:
            out["joinEui"] = secrets.get("join_eui")
            out["profId"] = secrets.get("prof_id")
    return out


def base_station(view: StationView) -> dict[str, Any]:
    s = view.station
    return {
        "id": s.identifier,
        "name": s.name,
        "group": min_group(view.group),
        "location": {"lat": s.lat, "lng": s.lng},
        "altitude": s.altitude,
        "antennaHeight": s.antenna_height,
        "antennaGain": s.antenna_gain,
        "radioZone": s.radio_zone,
        "enabled": s.enabled,
        "state": s.state,
        "lastSeen": to_ms(s.last_seen_at),
        "framesLastDay": view.frames_last_day,
        "undeliveredFramesLastDay": view.undelivered_last_day,
        "credentialRenewalTime": to_ms(s.secret_rotated_at),
        **_stamps(s),
    }


def _decimal(value: float | None) -> str | None:
    """RSSI, SNR and coordinates of `rinfos` as the live Sigfox service sends them: strings
    with two decimals (api.md)."""
    return None if value is None else f"{value:.2f}"


def _cb_status(view: MessageView, n: int) -> list[dict[str, Any]]:
    """The callbacks of `rinfos[n]` (Sigfox gives each reception its `cbStatus`): the message's
    own calls under its first reception, a sendDuplicate copy under the reception it was made for."""
    here = view.receptions[n].reception.id
    return [
        {"status": c.status, "info": c.info or c.state, "cbDef": c.url, "time": to_ms(c.time)}
        for c in view.callbacks
        if (c.state != "PENDING" or c.status is not None) and (c.reception_id == here if c.duplicate else n == 0)
    ]


def computed_location(
    lat: float | None, lng: float | None, radius: int | None, source: int | None
) -> list[dict[str, Any]]:
    """A message's `computedLocation`: its one location (heron.geolocation), or none."""
    if lat is None or lng is None:
        return []
    return [{"lat": lat, "lng": lng, "radius": radius, "source": source}]


def device_location(row: Any) -> dict[str, Any]:
    """An item of `/devices/{id}/locations` (Sigfox `deviceLocation_2`): the message's time,
    `valid`, and its computedLocation's fields when it has one."""
    found = computed_location(row.loc_lat, row.loc_lng, row.loc_radius, row.loc_source)
    return {"time": to_ms(row.time), "valid": bool(found), **(found[0] if found else {})}


def message(view: MessageView) -> dict[str, Any]:
    m = view.message
    out: dict[str, Any] = {
        "device": {"id": view.device_identifier, "name": view.device_name},
        "time": to_ms(m.time),
        "data": m.data,
        "ackRequired": m.ack_required,
        "lqi": m.lqi,
        "seqNumber": m.seq_number,
        "nbFrames": m.nb_frames,
        "computedLocation": computed_location(m.loc_lat, m.loc_lng, m.loc_radius, m.loc_source),
        "rinfos": [
            {
                "baseStation": {"id": r.station.identifier, "name": r.station.name, "resourceType": 0},
                "rssi": _decimal(r.reception.rssi),
                "snr": _decimal(r.reception.snr),
                "lat": _decimal(r.station.lat),
                "lng": _decimal(r.station.lng),
                "freq": r.reception.freq,
                "rep": r.reception.rep,
                "late": r.reception.late,
                "cbStatus": _cb_status(view, n),
            }
            for n, r in enumerate(view.receptions)
        ],
        # Heron's additions
        "callbacks": [
            {
                "callbackId": str(c.callback_id),
                "event": c.event,
                "state": c.state,
                "status": c.status,
                "info": c.info,
                "time": to_ms(c.time),
                "duplicate": c.duplicate,  # a sendDuplicate copy, made for `station`'s reception
                "station": c.station,
            }
            for c in view.callbacks
        ],
        "frameType": m.frame_type,
        "lostMessages": m.lost,
    }
    if m.decoded is not None:
        out["decodedData"] = view.decoded
    if m.service is not None:
        out["service"] = view.service
    return out


def callback(view: CallbackView) -> dict[str, Any]:
    cb = view.callback
    out: dict[str, Any] = {
        "id": str(cb.id),
        "channel": cb.channel,
        "callbackType": TYPE_IDS[cb.callback_type],
        "callbackSubtype": SUBTYPE_IDS[cb.callback_subtype] if cb.callback_subtype else None,
        "payloadConfig": cb.payload_config,
        "enabled": cb.enabled,
        "dead": cb.dead,
        "sendDuplicate": cb.send_duplicate,
        "signingSecret": MASK if cb.signing_secret else None,
    }
    if cb.channel == "URL":
        out |= {
            "url": shown_url(cb),
            "httpMethod": cb.http_method,
            "headers": view.headers,
            "sendSni": cb.send_sni,
            "bodyTemplate": cb.body_template,
            "contentType": cb.content_type,
            "downlinkHook": cb.downlink_hook,
        }
    elif cb.channel == "BATCH_URL":
        out |= {"url": shown_url(cb), "httpMethod": cb.http_method, "linePattern": cb.line_pattern}
    else:
        out |= {"recipient": cb.recipient, "subject": cb.subject, "message": cb.message}
    return out
