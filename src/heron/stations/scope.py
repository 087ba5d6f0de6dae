"""What a station may deliver and serve: the devices in its group's subtree, or, for a station
bound to one device type (a Sigfox cloud bridge's), that type's alone. The uplink store applies
it to what stations hear; the downlink decider and the stations' collection to what they send."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func, or_


def serves(station_path: Any, device_path: Any) -> ColumnElement[bool]:
    """A station's group path ('/1/5/') prefixes its devices' ('/1/5/23/')."""
    served: ColumnElement[bool] = func.substr(device_path, 1, func.length(station_path)) == station_path
    return served


def of_type(station_device_type: Any, device_type: Any) -> ColumnElement[bool]:
    """A station bound to a device type serves that type alone; an unbound one any type."""
    return or_(station_device_type.is_(None), station_device_type == device_type)
