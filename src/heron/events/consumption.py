"""Consumption: uplinks and downlinks per day, from the per-device-day counters the ingest and
the downlink side keep (`uplink_counts`: DATA uplinks of a device holding a token, counted by
the ingest against its contract's daily limit; downlinks acknowledged by the station). A day is
the contract day (midnight in the contract's timezone), as the counters are kept; counters are
kept `events.service.COUNT_DAYS` days (a year and a month back).

A device type's or a group's consumption is the sum over the devices now in it (for a group,
its whole subtree; deleted devices included until purged, since they were billed), one
`GROUP BY day` over the counters' (device, day) key."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from heron.errors import InvalidInput
from heron.events.models import UplinkCount
from heron.registry import device_types, devices
from heron.registry.models import Device
from heron.tenancy import groups
from heron.tenancy.access import Actor, in_subtree
from heron.tenancy.models import Group


@dataclass(frozen=True)
class Day:
    day: date
    uplinks: int
    downlinks: int


def period(year: str, month: str | None) -> tuple[date, date]:
    """[first day, last day] of the year or month; 400 naming the path parameter otherwise."""
    if not (year.isascii() and year.isdigit() and 1970 <= int(year) <= 9999):
        raise InvalidInput.field("year", "must be a year from 1970 to 9999", "path")
    y = int(year)
    if month is None:
        return date(y, 1, 1), date(y, 12, 31)
    if not (month.isascii() and month.isdigit() and 1 <= int(month) <= 12):
        raise InvalidInput.field("month", "must be 1 to 12", "path")
    m = int(month)
    return date(y, m, 1), date(y, m, calendar.monthrange(y, m)[1])


def _days(session: Session, scope: ColumnElement[bool], first: date, last: date) -> list[Day]:
    """Every day of [first, last] (zeros where nothing was counted), summed over `scope`."""
    rows = session.execute(
        select(UplinkCount.day, func.sum(UplinkCount.uplinks), func.sum(UplinkCount.downlinks))
        .join(Device, Device.id == UplinkCount.device_id)
        .where(scope, UplinkCount.day >= first, UplinkCount.day <= last)
        .group_by(UplinkCount.day)
    )
    counted = {day: (int(up or 0), int(down or 0)) for day, up, down in rows}
    out = []
    day = first
    while day <= last:
        up, down = counted.get(day, (0, 0))
        out.append(Day(day, up, down))
        day += timedelta(days=1)
    return out


# The object is looked up first (its id checked, then the caller's rights), then the period.
def of_device(session: Session, actor: Actor, ref: str, year: str, month: str | None = None) -> list[Day]:
    d = devices.get(session, actor, ref).device
    return _days(session, Device.id == d.id, *period(year, month))


def of_device_type(
    session: Session, actor: Actor, device_type_id: int, year: str, month: str | None = None
) -> list[Day]:
    device_types.get(session, actor, device_type_id, "device:read")
    return _days(session, Device.device_type_id == device_type_id, *period(year, month))


def of_group(session: Session, actor: Actor, group_id: int, year: str, month: str | None = None) -> list[Day]:
    group = groups.get(session, actor, group_id, "device:read")
    subtree = select(Group.id).where(in_subtree(Group.path, group.path))
    return _days(session, Device.group_id.in_(subtree), *period(year, month))
