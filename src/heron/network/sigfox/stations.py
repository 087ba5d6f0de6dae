"""Base stations: the registry of receivers an operator group runs, their ingest credentials
and their traffic figures. Stations authenticate to the ingest with HTTP Basic (station id,
secret); the secret is shown once, at creation and at rotation."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from heron.db.base import utcnow
from heron.db.engine import Database
from heron.db.fastpath import FastQuery
from heron.errors import Conflict, InvalidInput, NotFound
from heron.network.sigfox.lqi import RADIO_ZONES
from heron.registry.identifiers import SigfoxId, is_hex
from heron.stations.models import BaseStation, StationTraffic
from heron.tenancy import audit
from heron.tenancy.access import Actor
from heron.tenancy.models import Group
from heron.tenancy.owned import check_name, in_groups, owning_group

SECRET_BYTES = 32
ANTENNA_HEIGHT_M = (1.0, 500.0)
ANTENNA_GAIN_DBI = (-10.0, 30.0)


@dataclass
class StationView:
    station: BaseStation
    group: Group
    frames_last_day: int = 0
    undelivered_last_day: int = 0


@dataclass
class StationFields:
    """Settable fields; None = unchanged."""

    name: str | None = None
    lat: float | None = None
    lng: float | None = None
    altitude: int | None = None
    radio_zone: str | None = None
    enabled: bool | None = None
    antenna_height: float | None = None  # metres above ground (service prediction)
    antenna_gain: float | None = None  # dBi, net of cable loss
    unset: frozenset[str] = frozenset()  # of antenna_height, antenna_gain: back to the defaults


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def _apply(station: BaseStation, f: StationFields) -> dict[str, object]:
    changes: dict[str, object] = {}
    if f.name is not None:
        changes["name"] = station.name = check_name(f.name)
    if f.lat is not None:
        if not -90 <= f.lat <= 90:
            raise InvalidInput.field("lat", "must be between -90 and 90")
        changes["lat"] = station.lat = f.lat
    if f.lng is not None:
        if not -180 <= f.lng <= 180:
            raise InvalidInput.field("lng", "must be between -180 and 180")
        changes["lng"] = station.lng = f.lng
    if f.altitude is not None:
        if not -500 <= f.altitude <= 10_000:
            raise InvalidInput.field("altitude", "must be between -500 and 10000 metres")
        changes["altitude"] = station.altitude = f.altitude
    if f.radio_zone is not None:
        if f.radio_zone not in RADIO_ZONES:
            raise InvalidInput.field("radioZone", f"must be one of {', '.join(RADIO_ZONES)}")
        changes["radio_zone"] = station.radio_zone = f.radio_zone
    if f.enabled is not None:
        changes["enabled"] = station.enabled = f.enabled
    if f.antenna_height is not None:
        if not (math.isfinite(f.antenna_height) and ANTENNA_HEIGHT_M[0] <= f.antenna_height <= ANTENNA_HEIGHT_M[1]):
            raise InvalidInput.field("antennaHeight", "must be between 1 and 500 metres above ground")
        changes["antenna_height"] = station.antenna_height = f.antenna_height
    if f.antenna_gain is not None:
        if not (math.isfinite(f.antenna_gain) and ANTENNA_GAIN_DBI[0] <= f.antenna_gain <= ANTENNA_GAIN_DBI[1]):
            raise InvalidInput.field("antennaGain", "must be between -10 and 30 dBi")
        changes["antenna_gain"] = station.antenna_gain = f.antenna_gain
    # None in the column: the service prediction takes HERON_COVERAGE_STATION_HEIGHT_M / _GAIN_DBI.
    if "antenna_height" in f.unset:
        changes["antenna_height"] = station.antenna_height = None
    if "antenna_gain" in f.unset:
        changes["antenna_gain"] = station.antenna_gain = None
    return changes


def create(
    session: Session, actor: Actor, *, group_id: int, identifier: str, fields: StationFields
) -> tuple[StationView, str]:
    """A new station and its ingest secret (returned once)."""
    group = owning_group(session, actor, group_id, "base_station:write")
    ident = str(SigfoxId.parse(identifier, "id"))
    if session.scalar(select(BaseStation.id).where(BaseStation.identifier == ident)) is not None:
        raise Conflict(f"base station {ident} already exists")
    if fields.name is None:
        raise InvalidInput.field("name", "field required")
    secret, now = _new_secret(), utcnow()
    station = BaseStation(
        identifier=ident,
        name="",
        group_id=group.id,
        radio_zone="RC1",
        enabled=True,
        state="NEW",
        secret_hash=_hash(secret),
        secret_rotated_at=now,
        created_at=now,
        created_by=actor.ref,
    )
    _apply(station, fields)
    session.add(station)
    session.flush()
    audit.record(session, actor, "create", station, "base_station", group.path, {"id": ident, "name": station.name})
    return StationView(station, group), secret


def _load(session: Session, identifier: str) -> StationView:
    # In a path the id is exactly its hex digits (a body may say 0x1E6AB or pad it).
    if not is_hex(identifier, range(1, 9)):
        raise InvalidInput.field(
            "id", f"must be 1 to 8 hex digits (a base station id), got {identifier[:40]!r}", "path"
        )
    ident = str(SigfoxId.parse(identifier, "id", "path"))
    row = session.execute(
        select(BaseStation, Group).join(Group, Group.id == BaseStation.group_id).where(BaseStation.identifier == ident)
    ).first()
    if row is None:
        raise NotFound("base station not found")
    return StationView(row[0], row[1])


def _with_traffic(session: Session, views: list[StationView], now: datetime) -> list[StationView]:
    if not views:
        return views
    since = (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    rows = session.execute(
        select(StationTraffic.station_id, func.sum(StationTraffic.frames), func.sum(StationTraffic.undelivered))
        .where(StationTraffic.station_id.in_([v.station.id for v in views]), StationTraffic.hour > since)
        .group_by(StationTraffic.station_id)
    )
    figures = {sid: (int(f or 0), int(u or 0)) for sid, f, u in rows}
    for v in views:
        v.frames_last_day, v.undelivered_last_day = figures.get(v.station.id, (0, 0))
    return views


def get(session: Session, actor: Actor, identifier: str, action: str = "base_station:read") -> StationView:
    view = _load(session, identifier)
    actor.require(action, view.group.path, "base station")
    return _with_traffic(session, [view], utcnow())[0]


def update(session: Session, actor: Actor, identifier: str, fields: StationFields) -> StationView:
    view = get(session, actor, identifier, "base_station:write")
    changes = _apply(view.station, fields)
    view.station.updated_at, view.station.updated_by = utcnow(), actor.ref
    audit.record(session, actor, "update", view.station, "base_station", view.group.path, changes)
    return view


def rotate_secret(session: Session, actor: Actor, identifier: str) -> str:
    """A new ingest secret; the old one stops working at once (the ingest reads the hash on
    every request)."""
    view = get(session, actor, identifier, "base_station:write")
    secret = _new_secret()
    view.station.secret_hash, view.station.secret_rotated_at = _hash(secret), utcnow()
    audit.record(session, actor, "rotate_secret", view.station, "base_station", view.group.path, {})
    return secret


def delete(session: Session, actor: Actor, identifier: str) -> None:
    """Only a station that never reported anything can be deleted (its receptions are history);
    disable it instead."""
    view = get(session, actor, identifier, "base_station:write")
    heard = select(StationTraffic.station_id).where(StationTraffic.station_id == view.station.id).limit(1)
    if view.station.last_seen_at is not None or session.scalar(heard) is not None:
        raise Conflict(f"base station {view.station.identifier} has receptions on record: disable it instead")
    audit.record(session, actor, "delete", view.station, "base_station", view.group.path, {})
    session.delete(view.station)


def list_stations(
    session: Session,
    actor: Actor,
    *,
    group_ids: list[int] | None = None,
    deep: bool = False,
    name: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[StationView], bool]:
    conds: list[ColumnElement[bool]] = [actor.visible_filter(Group.path, "base_station:read")]
    if group_ids:
        conds.append(in_groups(session, actor, group_ids, deep, BaseStation.group_id))
    if name:
        conds.append(BaseStation.name.contains(name, autoescape=True))
    if state:
        conds.append(BaseStation.state == state)
    rows = list(
        session.execute(
            select(BaseStation, Group)
            .join(Group, Group.id == BaseStation.group_id)
            .where(*conds)
            .order_by(BaseStation.identifier)
            .limit(limit + 1)
            .offset(offset)
        )
    )
    views = [StationView(s, g) for s, g in rows[:limit]]
    return _with_traffic(session, views, utcnow()), len(rows) > limit


# -- ingest credentials ---------------------------------------------------------------------------
_BY_IDENTIFIER = FastQuery("SELECT id, secret_hash, enabled FROM base_stations WHERE identifier = :identifier")


def authenticate(db: Database, identifier: str, secret: str) -> int | None:
    """The station's row id when (identifier, secret) is a valid, enabled station credential."""
    try:
        ident = str(SigfoxId.parse(identifier))
    except InvalidInput:
        return None
    row = _BY_IDENTIFIER.first(db, {"identifier": ident})
    if row is None:
        hmac.compare_digest(_hash(secret), _hash(""))  # same work for unknown stations
        return None
    station_id, secret_hash, enabled = row
    if not hmac.compare_digest(_hash(secret), secret_hash) or not enabled:
        return None
    return int(station_id)


class StationRecheck(NamedTuple):
    """A station credential the ingest let in on its cache's word, checked again by the uplink
    writer before it stores the request's frames (heron.uplink.writer.Recheck)."""

    identifier: str
    secret: str
    station_id: int

    def still_valid(self, db: Database) -> bool:
        return authenticate(db, self.identifier, self.secret) == self.station_id
