"""Path loss between a station (a receiver whose antenna is `h_b` metres above ground) and a
device (`h_m` metres above ground) at `d` km, at `f` MHz: the Okumura-Hata model with Hata's
mobile-antenna correction for a small or medium city, in its urban, suburban and open-area
forms, never less than free-space loss.

    L_urban    = 69.55 + 26.16 log f - 13.82 log h_b - a(h_m) + (44.9 - 6.55 log h_b) log d
    a(h_m)     = (1.1 log f - 0.7) h_m - (1.56 log f - 0.8)
    L_suburban = L_urban - 2 (log(f / 28))^2 - 5.4
    L_open     = L_urban - 4.78 (log f)^2 + 18.33 log f - 40.94
    L_free     = 32.45 + 20 log f + 20 log d

Hata fitted Okumura's measurements for 150-1500 MHz, h_b 30-200 m, h_m 1-10 m and d 1-20 km;
outside that (a 15 m mast, 40 km in open country) the formula is extrapolated. It knows no
terrain, buildings or earth curvature: a statistical median loss, good to a few dB on average
and off by 10-20 dB at a given spot.

Each form is `a + b log10(d)` with `a`, `b` per station, so the computation over many points
(compute.py) is one multiply-add per (station, point) on `log10(d)`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

ENVIRONMENTS = ("urban", "suburban", "open")
FREE_SPACE_SLOPE = 20.0  # dB per decade of distance

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class PathLoss:
    """Per-station terms of L(d) = max(hata_a + hata_b log10 d, free_a + 20 log10 d), d in km."""

    hata_a: Floats
    hata_b: Floats
    free_a: Floats


def okumura_hata(freq_mhz: Floats, station_height_m: Floats, device_height_m: float, environment: str) -> PathLoss:
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
    log_f = np.log10(freq_mhz)
    log_hb = np.log10(station_height_m)
    a_hm = (1.1 * log_f - 0.7) * device_height_m - (1.56 * log_f - 0.8)
    a = 69.55 + 26.16 * log_f - 13.82 * log_hb - a_hm
    if environment == "suburban":
        a = a - 2.0 * np.log10(freq_mhz / 28.0) ** 2 - 5.4
    elif environment == "open":
        a = a - 4.78 * log_f**2 + 18.33 * log_f - 40.94
    b = 44.9 - 6.55 * log_hb
    return PathLoss(hata_a=a, hata_b=b, free_a=32.45 + 20.0 * log_f)


def path_loss_db(loss: PathLoss, distance_km: Floats) -> Floats:
    """L(d) per (station, point) for a (stations x points) distance array (for tests and docs;
    the computation folds this into the margins)."""
    x = np.log10(np.maximum(distance_km, 1e-3))
    hata = loss.hata_a[:, None] + loss.hata_b[:, None] * x
    free = loss.free_a[:, None] + FREE_SPACE_SLOPE * x
    out: Floats = np.maximum(hata, free)
    return out
