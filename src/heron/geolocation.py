"""Network geolocation: where a device probably was, from the stations that heard one message.

The model (docs/ARCHITECTURE.md, "Network geolocation"):

- **Distance from RSSI**, by a log-distance path-loss model: the loss at distance d is
  `L(d) = REFERENCE_LOSS_DB + 10 * PATH_LOSS_EXPONENT * log10(d / 1 km)`, and a reception's
  RSSI is the device's transmit power plus the station's antenna gain less that loss. The
  defaults (116.1 dB at 1 km, exponent 3.52) are Okumura-Hata's suburban figures at 868 MHz for a
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
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

REFERENCE_LOSS_DB = 116.1  # path loss at 1 km
PATH_LOSS_EXPONENT = 3.52
DEVICE_POWER_DBM = 14.0  # a class 0U Sigfox device in RC1 (Europe)
STATION_GAIN_DBI = 5.0  # a station whose antenna gain is not declared
RADIUS_FACTOR = 1.9
MIN_RADIUS_M = 50
COORDINATE_DECIMALS = 6
# Estimated distances are kept within these (an absurd RSSI must not make an absurd number).
MIN_DISTANCE_M, MAX_DISTANCE_M = 1.0, 1_000_000.0

# computedLocation.source, as the Sigfox document numbers them: 2 "computed using Network
# location"; a device's declared position (a static device) is given as 3 "PoI location", a
# place its owner declared, with the smallest radius.
SOURCE_NETWORK, SOURCE_DECLARED = 2, 3
DECLARED_RADIUS_M = MIN_RADIUS_M


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
    # One flat list of every reading's 5 values (None -> NaN), read by numpy in one go: about
    # half the cost of building a tuple per usable reading in Python.
    counts = np.fromiter(map(len, messages), np.intp, len(messages))
    values = np.array(list(chain.from_iterable(chain.from_iterable(messages))), dtype=np.float64)
    lat, lng, rssi, power, gain = values.reshape(-1, len(Reading._fields)).T
    return _solve(counts, lat, lng, rssi, _budget(power, gain))


class Stations:
    """Stations by id (`Reading`s without an RSSI), as arrays: what `locate_heard` looks up."""

    def __init__(self, stations: Mapping[int, Reading]) -> None:
        ids = sorted(stations)
        self.ids = np.array(ids, dtype=np.int64)
        values = np.array([stations[i] for i in ids], dtype=np.float64).reshape(-1, len(Reading._fields))
        self.lat, self.lng, _rssi, power, gain = values.T
        self.budget = _budget(power, gain)


def locate_heard(
    counts: Sequence[int], station_ids: Sequence[int], rssi: Sequence[float | None], stations: Stations
) -> list[Fix | None]:
    """`locate_many` for messages given as `counts[i]` (station id, RSSI) pairs each, in order:
    no `Reading` per reception (the uplink writer's form: ids and RSSIs as it holds them)."""
    if not len(stations.ids):
        return [None] * len(counts)
    ids = np.array(station_ids, dtype=np.int64)
    at = np.minimum(np.searchsorted(stations.ids, ids), len(stations.ids) - 1)
    lat, lng = stations.lat[at], stations.lng[at]  # copies
    lat[stations.ids[at] != ids] = np.nan  # a station not in the table: left out
    rssi_values = np.array(rssi, dtype=np.float64)  # None -> NaN
    return _solve(np.array(counts, dtype=np.intp), lat, lng, rssi_values, stations.budget[at])


Floats = NDArray[np.float64]


def _budget(power: Floats, gain: Floats) -> Floats:
    """Transmit power plus antenna gain, in dB, the defaults where NaN."""
    return np.where(np.isnan(power), DEVICE_POWER_DBM, power) + np.where(np.isnan(gain), STATION_GAIN_DBI, gain)


def _solve(counts: NDArray[np.intp], lat: Floats, lng: Floats, rssi: Floats, budget: Floats) -> list[Fix | None]:
    """The fixes of len(counts) messages whose readings are the next counts[i] entries of the
    arrays, in order (NaN: unknown; a reading without position or RSSI is left out)."""
    size = len(counts)
    out: list[Fix | None] = [None] * size
    idx = np.repeat(np.arange(size), counts)  # sorted: each reading's message
    usable = ~(np.isnan(lat) | np.isnan(lng) | np.isnan(rssi))
    if not usable.all():
        idx, lat, lng, rssi, budget = idx[usable], lat[usable], lng[usable], rssi[usable], budget[usable]
    if not idx.size:
        return out
    d = 1000.0 * np.power(10.0, (budget - rssi - REFERENCE_LOSS_DB) / (10.0 * PATH_LOSS_EXPONENT))
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
    # Micro-degrees (~0.1 m), far below the error: a lone station's position comes out as given.
    est_lat, est_lng = np.round(est_lat, COORDINATE_DECIMALS), np.round(est_lng, COORDINATE_DECIMALS)
    mean_d = np.bincount(idx, w * d, size)[used] / sw[used]
    count = heard[used]
    radius = np.where(count == 1, mean_d, RADIUS_FACTOR * mean_d / np.sqrt(count))
    radius = np.maximum(np.rint(radius), MIN_RADIUS_M).astype(np.int64)
    fixes: list[Fix | None] = list(map(Fix, est_lat.tolist(), est_lng.tolist(), radius.tolist()))
    if len(fixes) == size:
        return fixes  # every message has a fix
    for n, fix in zip(np.flatnonzero(used).tolist(), fixes, strict=True):
        out[n] = fix
    return out
