"""Network geolocation: where a device probably was, from the stations that heard one message.

The model (docs/ARCHITECTURE.md, "Network geolocation"):

- **Distance from RSSI**, by a log-distance path-loss model: the loss at distance d is
  `L(d) = REFERENCE_LOSS_DB + 10 * PATH_LOSS_EXPONENT * log10(d / 1 km)`, and a reception's
  RSSI is the device's transmit power plus the station's antenna gain less that loss. The
  defaults (116 dB at 1 km, exponent 3.5) are Okumura-Hata's suburban figures at 868 MHz for a
  30 m station antenna and a device at 1.5 m. So `d = 1 km * 10 ** ((power + gain - rssi -
  REFERENCE_LOSS_DB) / (10 * PATH_LOSS_EXPONENT))`.
- **Position**: the centroid of the stations' positions weighted by 1 / d**2 (a station that
  hears the device loudly is probably close). On the benchmark's grid (`python -m bench
  geolocation`) the weight 1 / d**2 beat 1 / d, 1 / d**3 and a least-squares fit of the
  distances started from it: with 7 dB of shadowing an estimated distance is off by a factor of
  1.6 either way, which a fit follows and a centroid averages out.
- **Radius**, in metres, never 0: one station: its estimated distance (the device is somewhere
  on a circle of that size around it); more: `RADIUS_FACTOR * (weighted mean estimated
  distance) / sqrt(stations)`, which held the device in about 68 % of the benchmark's fixes.

SNR is not used: it is the RSSI less the station's noise floor and says nothing more about the
distance. A reception without an RSSI, or of a station without a position, is left out; a
message none of whose receptions is usable has no fix (None).

Pure functions; `locate_many` takes a whole batch of messages in a few vectorised numpy steps
(the uplink writer's cost is per batch, not per message)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

REFERENCE_LOSS_DB = 116.0  # path loss at 1 km
PATH_LOSS_EXPONENT = 3.5
DEVICE_POWER_DBM = 14.0  # a class 0U Sigfox device in RC1 (Europe)
STATION_GAIN_DBI = 5.0  # a station whose antenna gain is not declared
RADIUS_FACTOR = 1.9
MIN_RADIUS_M = 50
# Estimated distances are kept within these (an absurd RSSI must not make an absurd number).
MIN_DISTANCE_M, MAX_DISTANCE_M = 1.0, 1_000_000.0

SOURCE_NETWORK = 2  # computedLocation.source: "computed using Network location"


class Reading(NamedTuple):
    """One station's reception: where the station is and what it heard. `power_dbm` is what
    the device transmits (None: DEVICE_POWER_DBM), `gain_dbi` the station antenna's gain
    (None: STATION_GAIN_DBI)."""

    lat: float | None
    lng: float | None
    rssi: float | None
    power_dbm: float | None = None
    gain_dbi: float | None = None


class Fix(NamedTuple):
    lat: float
    lng: float
    radius: int  # metres


def distance_m(rssi: float, power_dbm: float = DEVICE_POWER_DBM, gain_dbi: float = STATION_GAIN_DBI) -> float:
    """The distance at which the model loses `power + gain - rssi` dB."""
    loss = power_dbm + gain_dbi - rssi
    d = 1000.0 * math.pow(10.0, (loss - REFERENCE_LOSS_DB) / (10.0 * PATH_LOSS_EXPONENT))
    return min(max(d, MIN_DISTANCE_M), MAX_DISTANCE_M)


def rssi_at(distance: float, power_dbm: float = DEVICE_POWER_DBM, gain_dbi: float = STATION_GAIN_DBI) -> float:
    """What the model says a station hears at `distance` metres (the inverse of `distance_m`)."""
    loss = REFERENCE_LOSS_DB + 10.0 * PATH_LOSS_EXPONENT * math.log10(max(distance, MIN_DISTANCE_M) / 1000.0)
    return power_dbm + gain_dbi - loss


def locate(readings: Sequence[Reading]) -> Fix | None:
    """The fix of one message (see the module docstring), or None when no reception is usable."""
    return locate_many([readings])[0]


def locate_many(messages: Sequence[Sequence[Reading]]) -> list[Fix | None]:
    """`locate` of each message, computed for all of them at once."""
    owner: list[int] = []
    flat: list[tuple[float, float, float, float, float]] = []
    for n, readings in enumerate(messages):
        for r in readings:
            if r.lat is None or r.lng is None or r.rssi is None:
                continue
            owner.append(n)
            flat.append(
                (
                    r.lat,
                    r.lng,
                    r.rssi,
                    DEVICE_POWER_DBM if r.power_dbm is None else r.power_dbm,
                    STATION_GAIN_DBI if r.gain_dbi is None else r.gain_dbi,
                )
            )
    out: list[Fix | None] = [None] * len(messages)
    if not flat:
        return out
    size = len(messages)
    idx = np.asarray(owner, dtype=np.intp)
    lat, lng, rssi, power, gain = np.asarray(flat, dtype=np.float64).T
    d = 1000.0 * np.power(10.0, (power + gain - rssi - REFERENCE_LOSS_DB) / (10.0 * PATH_LOSS_EXPONENT))
    d = np.clip(d, MIN_DISTANCE_M, MAX_DISTANCE_M)
    w = 1.0 / (d * d)
    # Longitudes relative to the message's first station, so a message heard across the
    # antimeridian averages -179.9 and 179.9 to 180, not to 0.
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))  # idx is sorted
    first_lng = np.zeros(size)
    first_lng[idx[starts]] = lng[starts]
    ref = first_lng[idx]
    rel = (lng - ref + 180.0) % 360.0 - 180.0
    sw = np.bincount(idx, w, size)
    heard = np.bincount(idx, None, size)
    used = heard > 0
    est_lat = np.bincount(idx, w * lat, size)[used] / sw[used]
    est_lng = np.bincount(idx, w * rel, size)[used] / sw[used] + first_lng[used]
    est_lng = (est_lng + 180.0) % 360.0 - 180.0
    mean_d = np.bincount(idx, w * d, size)[used] / sw[used]
    count = heard[used]
    radius = np.where(count == 1, mean_d, RADIUS_FACTOR * mean_d / np.sqrt(count))
    radius = np.maximum(np.rint(radius), MIN_RADIUS_M)
    for n, la, ln, rad in zip(
        np.flatnonzero(used).tolist(), est_lat.tolist(), est_lng.tolist(), radius.tolist(), strict=True
    ):
        out[n] = Fix(la, ln, int(rad))
    return out
