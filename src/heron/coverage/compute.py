"""Link margins of many points to many stations at once (numpy, vectorised over stations x
points), for single predictions, batches of locations and map grids alike.

A point's margin to a station, for a device radiating 0 dBm EIRP, is

    m0 = G_station - L(d) - S_station        (dB; S: the receiver's sensitivity in dBm)

so a device of EIRP P has margin m0 + P at that station: device classes differ by a constant
and share one computation. Distances come from unit vectors: 1 - u_s . u_p = d^2 / (2 R^2) (the
chord, within 0.01 km of the great-circle distance at 200 km), one matrix product for all
pairs, so `log10(d)` costs one `log10` per pair. Stations farther than the model's maximum range
do not count at all."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heron.coverage.propagation import FREE_SPACE_SLOPE, okumura_hata

EARTH_RADIUS_KM = 6371.0088
METRES_PER_DEGREE = EARTH_RADIUS_KM * 1000 * math.pi / 180
MIN_DISTANCE_KM = 0.01  # closer points are taken to be 10 m away (log10(0) aside, nothing changes)
DISC_SAMPLES = 19  # points a location's disc is averaged over (disc_samples)
FLOOR = -999.0  # the margin of "no station": finite, so averages and sorts stay plain arithmetic
CHUNK = 1 << 16  # stations x points computed at once (512 kB of float64: stays in the CPU cache)
MIN_CHUNK_POINTS = 64
LN10 = math.log(10)
FREE_SLOPE_LN = np.float32(-FREE_SPACE_SLOPE / 2 / LN10)  # the free-space term per unit of ln t

Floats = NDArray[np.float64]
Floats32 = NDArray[np.float32]


@dataclass(frozen=True)
class Model:
    """The propagation model's parameters (HERON_COVERAGE_*): what a station without its own
    antenna height or gain is taken to have, the device's height, and the range beyond which a
    station never counts."""

    environment: str = "suburban"
    station_height_m: float = 30.0
    station_gain_dbi: float = 5.0
    device_height_m: float = 1.5
    max_range_km: float = 100.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Model:
        return cls(**values)


@dataclass(frozen=True)
class Sites:
    """The stations a prediction counts: position (degrees), antenna height (m) and gain (dBi)
    (NaN: the model's default), frequency (MHz) and receiver sensitivity (dBm)."""

    lat: Floats
    lng: Floats
    height_m: Floats
    gain_dbi: Floats
    freq_mhz: Floats
    sensitivity_dbm: Floats

    def __len__(self) -> int:
        return int(self.lat.shape[0])

    @classmethod
    def of(cls, rows: Sequence[tuple[float | None, float | None, float | None, float | None, float, float]]) -> Sites:
        """From (lat, lng, height or None, gain or None, freq, sensitivity) rows (positions set)."""
        a = np.array(
            [
                (r[0], r[1], np.nan if r[2] is None else r[2], np.nan if r[3] is None else r[3], r[4], r[5])
                for r in rows
            ],
            dtype=np.float64,
        ).reshape(-1, 6)
        return cls(*(np.ascontiguousarray(a[:, i]) for i in range(6)))


def unit_vectors(lat: Floats, lng: Floats) -> Floats:
    phi, lam = np.radians(lat), np.radians(lng)
    cos_phi = np.cos(phi)
    out: Floats = np.stack((cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)), axis=1)
    return out


class LinkField:
    """The stations of one request, prepared once: unit vectors and each station's margin terms.
    `m0 = min(h0 - h1 ln t, f0 - (10 / ln 10) ln t)` with `t = 1 - u_s . u_p`."""

    def __init__(self, sites: Sites, model: Model) -> None:
        self.sites = sites
        self.model = model
        height = np.where(np.isnan(sites.height_m), model.station_height_m, sites.height_m)
        gain = np.where(np.isnan(sites.gain_dbi), model.station_gain_dbi, sites.gain_dbi)
        loss = okumura_hata(sites.freq_mhz, height, model.device_height_m, model.environment)
        half_log_2r2 = 0.5 * math.log10(2 * EARTH_RADIUS_KM**2)  # log10 d = this + log10(t) / 2
        budget = gain - sites.sensitivity_dbm
        self.h0 = (budget - loss.hata_a - loss.hata_b * half_log_2r2)[:, None].astype(np.float32)
        self.h1 = (loss.hata_b / 2 / LN10)[:, None].astype(np.float32)
        self.f0 = (budget - loss.free_a - FREE_SPACE_SLOPE * half_log_2r2)[:, None].astype(np.float32)
        self.units = unit_vectors(sites.lat, sites.lng)
        self.t_min = MIN_DISTANCE_KM**2 / (2 * EARTH_RADIUS_KM**2)
        self.ln_t_max = np.float32(math.log(model.max_range_km**2 / (2 * EARTH_RADIUS_KM**2)))
        # For pruning by area: how far (degrees of latitude) a station can count.
        self.reach_deg = model.max_range_km * 1000 / METRES_PER_DEGREE

    def __len__(self) -> int:
        return len(self.sites)

    def _near(self, lat: Floats, lng: Floats) -> NDArray[np.intp] | None:
        """Indices of the stations that may reach a point of this chunk (None: all of them)."""
        lat_lo, lat_hi = float(lat.min()) - self.reach_deg, float(lat.max()) + self.reach_deg
        keep = (self.sites.lat >= lat_lo) & (self.sites.lat <= lat_hi)
        widest = max(abs(lat_lo), abs(lat_hi))
        if widest < 80:  # nearer the poles a degree of longitude shrinks too fast to bother
            reach_lng = self.reach_deg / math.cos(math.radians(widest))
            lng_lo, lng_hi = float(lng.min()) - reach_lng, float(lng.max()) + reach_lng
            if lng_lo >= -180 and lng_hi <= 180:  # no wrap across the antimeridian
                keep &= (self.sites.lng >= lng_lo) & (self.sites.lng <= lng_hi)
        if keep.all():
            return None
        return np.flatnonzero(keep)

    def margins(self, lat: Floats, lng: Floats) -> Iterator[tuple[slice, Floats32]]:
        """(points slice, stations x points base margins in dB, float32) chunk by chunk; FLOOR
        where a station is out of range. Only the stations near a chunk are in its rows. The
        array is reused for the next chunk: read it before asking for the next one.

        Chunks are small enough to stay in the CPU cache, and every step writes into buffers
        made once: a fresh 8 MB array per step cost more in page faults than the arithmetic.
        The distance term is `ln t` in float32 (numpy's SIMD `log`; `log10` is 5x slower),
        after `t` itself is formed in float64 (it is ~1e-9 for 100 m)."""
        n = lat.shape[0]
        if n == 0:
            return
        width = max(MIN_CHUNK_POINTS, CHUNK // max(1, len(self)))
        points = np.ascontiguousarray(unit_vectors(lat, lng).T)  # 3 x n: one matrix product a chunk
        buffers: dict[int, tuple[Floats, Floats32, Floats32, NDArray[np.bool_]]] = {}
        for start in range(0, n, width):
            part = slice(start, min(n, start + width))
            near = self._near(lat[part], lng[part]) if len(self) else None
            units, h0, h1, f0 = self.units, self.h0, self.h1, self.f0
            if near is not None:
                units, h0, h1, f0 = units[near], h0[near], h1[near], f0[near]
            rows, cols = units.shape[0], part.stop - part.start
            if rows not in buffers:
                buffers[rows] = (
                    np.empty((rows, width)),
                    np.empty((rows, width), np.float32),
                    np.empty((rows, width), np.float32),
                    np.empty((rows, width), np.bool_),
                )
            whole = buffers[rows]
            dot, ln_t, free, beyond = whole[0][:, :cols], whole[1][:, :cols], whole[2][:, :cols], whole[3][:, :cols]
            np.matmul(units, points[:, part], out=dot)
            np.subtract(1.0, dot, out=dot)
            np.maximum(dot, self.t_min, out=dot)
            np.copyto(ln_t, dot, casting="same_kind")
            np.log(ln_t, out=ln_t)
            np.greater(ln_t, self.ln_t_max, out=beyond)
            np.multiply(ln_t, FREE_SLOPE_LN, out=free)
            free += f0
            np.multiply(ln_t, h1, out=ln_t)
            np.subtract(h0, ln_t, out=ln_t)
            np.minimum(ln_t, free, out=ln_t)
            if beyond.any():
                np.copyto(ln_t, FLOOR, where=beyond)
            yield part, ln_t

    def best(self, lat: Floats, lng: Floats, k: int = 3) -> Floats:
        """(k x points): each point's k best base margins, best first; FLOOR where fewer than
        k stations reach it."""
        out: Floats = np.full((k, lat.shape[0]), FLOOR)
        for part, m in self.margins(lat, lng):
            s = m.shape[0]
            if s == 0:
                continue
            if s > k:
                m = np.partition(m, s - k, axis=0)[s - k :]
            top = -np.sort(-m, axis=0)
            out[: top.shape[0], part] = top
        return out

    def best_and_count(self, lat: Floats, lng: Floats, above: float) -> tuple[Floats, NDArray[np.int64]]:
        """Each point's best base margin and how many stations give a base margin > `above`."""
        best: Floats = np.full(lat.shape[0], FLOOR)
        count = np.zeros(lat.shape[0], dtype=np.int64)
        for part, m in self.margins(lat, lng):
            if m.shape[0]:
                best[part] = m.max(axis=0)
                count[part] = np.count_nonzero(m > above, axis=0)
        return best, count


# -- where to compute ------------------------------------------------------------------------------
def disc_samples(lat: Floats, lng: Floats, radius_m: float) -> tuple[Floats, Floats, int]:
    """Points spread over a disc of `radius_m` around each location (the centre, 6 at half the
    radius and 12 on the rim, nearly equal areas), location by location: (lats, lngs, samples
    per location). A radius of 0 is the location alone."""
    if radius_m <= 0:
        return lat, lng, 1
    rings = [(0.0, 1), (0.5, 6), (1.0, 12)]  # DISC_SAMPLES in all
    dx, dy = [], []
    for frac, count in rings:
        for i in range(count):
            angle = 2 * math.pi * i / count + (math.pi / count if frac == 1.0 else 0.0)
            dx.append(frac * radius_m * math.cos(angle))
            dy.append(frac * radius_m * math.sin(angle))
    ox, oy = np.array(dx), np.array(dy)
    cos_lat = np.maximum(np.cos(np.radians(lat)), 0.01)
    slat = np.clip(lat[:, None] + oy[None, :] / METRES_PER_DEGREE, -90.0, 90.0)
    slng = lng[:, None] + ox[None, :] / (METRES_PER_DEGREE * cos_lat[:, None])
    slng = (slng + 180.0) % 360.0 - 180.0
    return slat.ravel(), slng.ravel(), len(dx)


def averaged_best(field: LinkField, lat: Floats, lng: Floats, radius_m: float, k: int = 3) -> Floats:
    """(k x locations): the k best base margins, averaged (in dB) over the disc of `radius_m`
    around each location."""
    slat, slng, per = disc_samples(lat, lng, radius_m)
    top = field.best(slat, slng, k)
    out: Floats = top.reshape(k, lat.shape[0], per).mean(axis=2)
    return out


@dataclass(frozen=True)
class Grid:
    """Sample points of a bounding box every `step` degrees: `cols` west to east from `min_lng`,
    `rows` north to south from `max_lat` (image order), row-major."""

    min_lng: float
    min_lat: float
    max_lng: float
    max_lat: float
    step: float

    @property
    def cols(self) -> int:
        return math.floor((self.max_lng - self.min_lng) / self.step + 1e-9) + 1

    @property
    def rows(self) -> int:
        return math.floor((self.max_lat - self.min_lat) / self.step + 1e-9) + 1

    def points(self) -> tuple[Floats, Floats]:
        lngs = self.min_lng + self.step * np.arange(self.cols)
        lats = self.max_lat - self.step * np.arange(self.rows)
        lat, lng = np.meshgrid(lats, lngs, indexing="ij")
        return lat.ravel(), lng.ravel()
