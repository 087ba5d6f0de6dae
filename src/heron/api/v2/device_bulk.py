"""/api/v2/devices/bulk: Sigfox v2 bulk operations (create, edit, transfer, replace,
unsubscribe) as jobs of the one job engine. Included before the devices router, so that
`/devices/bulk` is never read as a device id."""

from __future__ import annotations

from fastapi import APIRouter

from heron.api.v2 import PREFIX

router = APIRouter(prefix=PREFIX + "/devices/bulk", tags=["devices"])
