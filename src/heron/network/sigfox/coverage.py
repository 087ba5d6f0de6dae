"""Service prediction for Sigfox-style devices (the Sigfox `/coverages` API and Heron's grid):
link margins of the device classes 0U-3U to the registered base stations, and redundancy.

Which stations count: every enabled station with a position that is not OFFLINE, whoever runs
it: coverage is a property of the network (Sigfox's map is public), so a customer's prediction
counts other operators' stations too. The answers carry margins and counts only, never a
station's identity or position. `operatorId` narrows the stations to one operator group's
subtree, for callers who may read that group's stations (`base_station:read`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from heron.config import Settings
from heron.coverage.compute import METRES_PER_DEGREE, Grid, LinkField, Model, Sites, averaged_best
from heron.errors import InvalidInput
from heron.jobs import engine
from heron.jobs.engine import JobContext, JobKind, RowOutcome
from heron.jobs.models import Job
from heron.stations.models import BaseStation
from heron.tenancy import audit, groups
from heron.tenancy.access import Actor, in_subtree
from heron.tenancy.models import Group

# Sigfox Ready radiated-power classes (RC1): 0U +14 to +16 dBm, 1U +12 to +14, 2U +9 to +12,
# 3U +5 to +9. Each class is predicted at its lower bound, which every device of the class reaches.
DEVICE_CLASSES: dict[int, float] = {0: 14.0, 1: 12.0, 2: 9.0, 3: 5.0}
CLASS_NAMES = {c: f"{c}U" for c in DEVICE_CLASSES}
# A base station's sensitivity at 100 bps uplink (dBm).
SENSITIVITY_DBM = -142.0
# Sigfox's device situations: the margin a link needs beyond the outdoor one.
SITUATIONS: dict[str, float] = {"OUTDOOR": 0.0, "INDOOR": 20.0, "UNDERGROUND": 30.0}
# Uplink centre frequency per radio zone (MHz).
ZONE_FREQUENCY_MHZ = {
    "RC1": 868.13,
    "RC2": 902.2,
    "RC3": 923.2,
    "RC4": 920.8,
    "RC5": 923.3,
    "RC6": 865.2,
    "RC7": 868.8,
}
REDUNDANCY_CAP = 3  # Sigfox: 3 = three stations or more
LEVELS = 3  # margins for redundancy levels 1, 2 and 3

MAX_LOCATIONS = 1000  # a POST /coverages/global/predictions (Sigfox advises 200 at most)
MAX_BULK_LOCATIONS = 10_000  # a bulk job
MAX_RADIUS_M = 10_000
DEFAULT_RADIUS_M = 300
BULK = "coverage.predictions"
COVERED, NOT_COVERED = "covered", "notCovered"


def model_of(settings: Settings) -> Model:
    return Model(
        environment=settings.coverage_environment,
        station_height_m=settings.coverage_station_height_m,
        station_gain_dbi=settings.coverage_station_gain_dbi,
        device_height_m=settings.coverage_device_height_m,
        max_range_km=settings.coverage_max_range_km,
    )


# -- parameters ------------------------------------------------------------------------------------
def check_position(lat: float, lng: float, prefix: str = "", where: str = "query") -> None:
    if not (math.isfinite(lat) and -90 <= lat <= 90):
        raise InvalidInput.field(prefix + "lat", "must be between -90 and 90", where)
    if not (math.isfinite(lng) and -180 <= lng <= 180):
        raise InvalidInput.field(prefix + "lng", "must be between -180 and 180", where)


def check_radius(radius: float, where: str = "query") -> float:
    if not (math.isfinite(radius) and 0 <= radius <= MAX_RADIUS_M):
        raise InvalidInput.field("radius", f"must be between 0 and {MAX_RADIUS_M} metres", where)
    return float(radius)


def device_class(value: int) -> int:
    if value not in DEVICE_CLASSES:
        raise InvalidInput.field("deviceClassId", "must be 0, 1, 2 or 3 (0U to 3U)", "query")
    return value


def situation_margin(value: str) -> float:
    if value not in SITUATIONS:
        raise InvalidInput.field("deviceSituation", "must be one of " + ", ".join(SITUATIONS), "query")
    return SITUATIONS[value]


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """`minLng,minLat,maxLng,maxLat` (degrees; GeoJSON's order). A box across the antimeridian
    is asked as two."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidInput.field("bbox", "must be minLng,minLat,maxLng,maxLat in degrees", "query")
    min_lng, min_lat, max_lng, max_lat = values
    if not (-180 <= min_lng <= 180 and -180 <= max_lng <= 180):
        raise InvalidInput.field("bbox", "longitudes must be between -180 and 180", "query")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise InvalidInput.field("bbox", "latitudes must be between -90 and 90", "query")
    if not (min_lng < max_lng and min_lat < max_lat):
        raise InvalidInput.field("bbox", "minLng must be below maxLng and minLat below maxLat", "query")
    return min_lng, min_lat, max_lng, max_lat


def grid_of(bbox: str, step: float, max_points: int) -> Grid:
    min_lng, min_lat, max_lng, max_lat = parse_bbox(bbox)
    if not (math.isfinite(step) and step > 0):
        raise InvalidInput.field("step", "must be a number of degrees above 0", "query")
    cols = math.floor((max_lng - min_lng) / step + 1e-9) + 1
    rows = math.floor((max_lat - min_lat) / step + 1e-9) + 1
    if cols * rows > max_points:
        raise InvalidInput.field(
            "step", f"gives {cols} x {rows} points over the bbox; at most {max_points:,}: take a larger step", "query"
        )
    return Grid(min_lng, min_lat, max_lng, max_lat, step)


# -- which stations count ----------------------------------------------------------------------------
def operator_path(session: Session, actor: Actor, operator_id: int | None) -> str | None:
    """The subtree whose stations count (None: the whole network). Naming an operator group needs
    `base_station:read` there: a group the caller cannot see is a 404, like any other."""
    if operator_id is None:
        return None
    return groups.get(session, actor, operator_id, "base_station:read").path


def check_group(session: Session, actor: Actor, group_id: int | None, where: str = "query") -> None:
    """Sigfox's `groupId` adds a private operator's stations to the global coverage; every
    operator's stations count in Heron already, so it changes nothing, but it must be a group
    the caller can see: in a query a 404 otherwise, in a body a 400 naming it (input)."""
    if group_id is None:
        return
    if where == "query":
        groups.get(session, actor, group_id)
        return
    group = session.get(Group, group_id)
    if group is None or not actor.actions_on(group.path):
        raise InvalidInput.field("groupId", "no such group")
    actor.require("group:read", group.path, "group")


def load_field(
    session: Session,
    model: Model,
    *,
    operator: str | None = None,
    lats: NDArray[np.float64] | None = None,
    lngs: NDArray[np.float64] | None = None,
) -> LinkField:
    """The request's stations, read once; with the points (`lats`, `lngs`), only those that may
    reach one of them (a box around the points, the model's range wide)."""
    conds: list[ColumnElement[bool]] = [
        BaseStation.enabled.is_(True),
        BaseStation.state != "OFFLINE",
        BaseStation.lat.is_not(None),
        BaseStation.lng.is_not(None),
    ]
    if lats is not None and lngs is not None and lats.size:
        reach = model.max_range_km * 1000 / METRES_PER_DEGREE
        lat_lo, lat_hi = float(lats.min()) - reach, float(lats.max()) + reach
        conds += [BaseStation.lat >= lat_lo, BaseStation.lat <= lat_hi]
        widest = max(abs(lat_lo), abs(lat_hi))
        if widest < 80:
            reach_lng = reach / math.cos(math.radians(widest))
            lng_lo, lng_hi = float(lngs.min()) - reach_lng, float(lngs.max()) + reach_lng
            if lng_lo >= -180 and lng_hi <= 180:
                conds += [BaseStation.lng >= lng_lo, BaseStation.lng <= lng_hi]
    query = select(
        BaseStation.lat, BaseStation.lng, BaseStation.antenna_height, BaseStation.antenna_gain, BaseStation.radio_zone
    )
    if operator is not None:
        query = query.join(Group, Group.id == BaseStation.group_id)
        conds.append(in_subtree(Group.path, operator))
    rows = [
        (lat, lng, height, gain, ZONE_FREQUENCY_MHZ.get(zone, ZONE_FREQUENCY_MHZ["RC1"]), SENSITIVITY_DBM)
        for lat, lng, height, gain, zone in session.execute(query.where(*conds))
    ]
    return LinkField(Sites.of(rows), model)


# -- predictions (pure computation: safe to run in a worker thread) ---------------------------------
@dataclass(frozen=True)
class Prediction:
    lat: float
    lng: float
    covered: bool
    margins: list[int]  # redundancy levels 1-3, class 0U, outdoor (Sigfox's `margins`)
    class_margins: dict[int, list[int]]  # the same for each device class

    def as_wire(self) -> dict[str, Any]:
        """The Sigfox item (`lat, lng, locationCovered, margins`) and Heron's `deviceClasses`."""
        return {
            "lat": self.lat,
            "lng": self.lng,
            "locationCovered": self.covered,
            "margins": self.margins,
            "deviceClasses": [
                {"deviceClassId": c, "name": CLASS_NAMES[c], "margins": m} for c, m in self.class_margins.items()
            ],
        }


def _db(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Margins as the API gives them: whole dB, 0 for "not enough" (Sigfox's example)."""
    out: NDArray[np.int64] = np.maximum(np.rint(values), 0).astype(np.int64)
    return out


def predict(field: LinkField, lats: list[float], lngs: list[float], radius_m: float) -> list[Prediction]:
    lat, lng = np.asarray(lats, dtype=np.float64), np.asarray(lngs, dtype=np.float64)
    top = averaged_best(field, lat, lng, radius_m, LEVELS)  # base margins (0 dBm EIRP), best first
    per_class = {c: _db(top + eirp).T.tolist() for c, eirp in DEVICE_CLASSES.items()}
    covered = (top[0] + DEVICE_CLASSES[0] > 0).tolist()
    return [
        Prediction(lats[i], lngs[i], bool(covered[i]), per_class[0][i], {c: per_class[c][i] for c in DEVICE_CLASSES})
        for i in range(len(lats))
    ]


def redundancy(field: LinkField, lat: float, lng: float, device_class_id: int, situation: float) -> int:
    """How many stations (3 = three or more) a device of the class hears with a margin above
    the situation's."""
    _best, count = field.best_and_count(np.array([lat]), np.array([lng]), situation - DEVICE_CLASSES[device_class_id])
    return min(int(count[0]), REDUNDANCY_CAP)


@dataclass(frozen=True)
class GridResult:
    grid: Grid
    margins: dict[int, NDArray[np.int16]]  # best outdoor margin per class, whole dB, row-major
    redundancy: NDArray[np.uint8]  # stations in reach for the asked class and situation, up to 3


def grid(field: LinkField, g: Grid, device_class_id: int, situation: float) -> GridResult:
    lat, lng = g.points()
    best, count = field.best_and_count(lat, lng, situation - DEVICE_CLASSES[device_class_id])
    best64 = best.astype(np.float64)
    margins = {c: np.clip(np.rint(best64 + eirp), 0, 32767).astype(np.int16) for c, eirp in DEVICE_CLASSES.items()}
    return GridResult(g, margins, np.minimum(count, REDUNDANCY_CAP).astype(np.uint8))


# -- the bulk form: a job of the one engine ----------------------------------------------------------
def check_locations(locations: list[tuple[float, float]], limit: int) -> None:
    if not locations:
        raise InvalidInput.field("locations", "must hold at least one location")
    if len(locations) > limit:
        raise InvalidInput.field("locations", f"at most {limit:,} locations a request")
    for i, (lat, lng) in enumerate(locations):
        check_position(lat, lng, f"locations[{i}].", "body")


def _run_bulk(session: Session, ctx: JobContext, batch: list[tuple[int, dict[str, Any]]]) -> list[RowOutcome]:
    """One batch: the stations near its locations read once, every location computed at once.
    A location's result is its row message (the engine keeps them in row order)."""
    lats = [float(row["lat"]) for _, row in batch]
    lngs = [float(row["lng"]) for _, row in batch]
    field = load_field(session, Model.from_dict(ctx.params["model"]), lats=np.asarray(lats), lngs=np.asarray(lngs))
    out = []
    for p in predict(field, lats, lngs, float(ctx.params["radius"])):
        message = json.dumps(p.as_wire(), separators=(",", ":"))
        out.append(RowOutcome(COVERED if p.covered else NOT_COVERED, message))
    return out


# The bulk coverage job kind (registered by heron.runtime.job_kinds).
JOB_KINDS = [JobKind(BULK, _run_bulk, (COVERED, NOT_COVERED), batch_size=1000)]


def submit_bulk(
    session: Session, actor: Actor, model: Model, locations: list[tuple[float, float]], radius_m: float
) -> Job:
    """A bulk prediction job, filed in the caller's topmost group (its submitter may always read
    it). The model's parameters go with it, so a result does not depend on when it runs."""
    check_locations(locations, MAX_BULK_LOCATIONS)
    home = min((r.path for r in actor.roles), key=len, default="/")
    job = engine.submit(
        session,
        kind=BULK,
        created_by=actor.ref,
        group_path=home,
        rows=[{"lat": lat, "lng": lng} for lat, lng in locations],
        lock_keys=[],
        params={"radius": radius_m, "model": model.as_dict()},
        req_id_prefix="",
    )
    audit.record(session, actor, "submit", job, "job", home, {"kind": BULK, "total": len(locations)})
    return job


def bulk_results(report: engine.JobReport) -> list[dict[str, Any]]:
    return [json.loads(message) for _entity, message in report.entries]
