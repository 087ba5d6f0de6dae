"""The propagation model and the vectorised link-margin computation (heron.coverage), checked
against the published formula and a plain point-by-point computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heron.coverage.compute import FLOOR, Grid, LinkField, Model, Sites, averaged_best, disc_samples
from heron.coverage.propagation import okumura_hata, path_loss_db

R = 6371.0088


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(math.sqrt(h))


def scalar_margin(site: tuple[float, ...], lat: float, lng: float, model: Model) -> float:
    """One station, one point, written out from the formulas (no numpy): the reference."""
    s_lat, s_lng, height, gain, freq, sens = site
    hb = model.station_height_m if math.isnan(height) else height
    g = model.station_gain_dbi if math.isnan(gain) else gain
    d = max(haversine_km(s_lat, s_lng, lat, lng), 0.01)
    if d > model.max_range_km:
        return FLOOR
    lf, lh, hm = math.log10(freq), math.log10(hb), model.device_height_m
    a_hm = (1.1 * lf - 0.7) * hm - (1.56 * lf - 0.8)
    urban = 69.55 + 26.16 * lf - 13.82 * lh - a_hm + (44.9 - 6.55 * lh) * math.log10(d)
    loss = {
        "urban": urban,
        "suburban": urban - 2 * math.log10(freq / 28) ** 2 - 5.4,
        "open": urban - 4.78 * lf**2 + 18.33 * lf - 40.94,
    }[model.environment]
    loss = max(loss, 32.45 + 20 * lf + 20 * math.log10(d))
    return g - loss - sens


@pytest.mark.parametrize(("environment", "at_10_km"), [("urban", 161.218), ("suburban", 151.370), ("open", 132.867)])
def test_okumura_hata_gives_the_published_loss_at_868_mhz(environment: str, at_10_km: float) -> None:
    """868 MHz, a 30 m mast, a device 1.5 m above ground, 10 km apart (hand-computed values)."""
    loss = okumura_hata(np.array([868.0]), np.array([30.0]), 1.5, environment)
    assert path_loss_db(loss, np.array([[10.0]]))[0, 0] == pytest.approx(at_10_km, abs=0.001)
    # 35.2 dB more per decade of distance (44.9 - 6.55 log10 30)
    assert path_loss_db(loss, np.array([[20.0]]))[0, 0] - at_10_km == pytest.approx(35.22 * math.log10(2), abs=0.01)


def test_loss_is_never_below_free_space_and_a_taller_mast_loses_less() -> None:
    loss = okumura_hata(np.array([868.0]), np.array([30.0]), 1.5, "open")
    free_50_m = 32.45 + 20 * math.log10(868) + 20 * math.log10(0.05)
    assert path_loss_db(loss, np.array([[0.05]]))[0, 0] == pytest.approx(free_50_m)
    tall = okumura_hata(np.array([868.0]), np.array([120.0]), 1.5, "suburban")
    low = okumura_hata(np.array([868.0]), np.array([30.0]), 1.5, "suburban")
    d = np.array([[15.0]])
    assert path_loss_db(tall, d)[0, 0] < path_loss_db(low, d)[0, 0] - 8
    with pytest.raises(ValueError, match="environment"):
        okumura_hata(np.array([868.0]), np.array([30.0]), 1.5, "jungle")


def _random_sites(rng: np.random.Generator, n: int, spread: float) -> list[tuple[float, ...]]:
    out: list[tuple[float, ...]] = []
    for _ in range(n):
        height = float("nan") if rng.random() < 0.3 else float(rng.uniform(5, 200))
        gain = float("nan") if rng.random() < 0.3 else float(rng.uniform(-2, 10))
        freq = float(rng.choice([868.13, 902.2, 920.8]))
        lat, lng = 45 + rng.uniform(-spread, spread), 4 + rng.uniform(-spread, spread)
        out.append((lat, lng, height, gain, freq, -142.0))
    return out


@pytest.mark.parametrize("environment", ["urban", "suburban", "open"])
def test_vectorised_margins_match_a_point_by_point_computation(environment: str) -> None:
    rng = np.random.default_rng(7)
    model = Model(environment=environment, max_range_km=60)
    sites = _random_sites(rng, 25, 0.6)
    lat = 45 + rng.uniform(-0.8, 0.8, 300)
    lng = 4 + rng.uniform(-0.8, 0.8, 300)
    lat[:3], lng[:3] = [s[0] for s in sites[:3]], [s[1] for s in sites[:3]]  # right at a station
    field = LinkField(
        Sites.of(
            [
                (s[0], s[1], None if math.isnan(s[2]) else s[2], None if math.isnan(s[3]) else s[3], s[4], s[5])
                for s in sites
            ]
        ),
        model,
    )
    top = field.best(lat, lng, 3)
    best, count = field.best_and_count(lat, lng, -140.0)
    for p in range(lat.size):
        expected = sorted((scalar_margin(s, lat[p], lng[p], model) for s in sites), reverse=True)
        assert top[:, p] == pytest.approx(expected[:3], abs=0.02), p
        assert best[p] == pytest.approx(expected[0], abs=0.02)
        assert count[p] == sum(1 for e in expected if e > -140.0)


def test_chunked_and_pruned_computation_of_a_wide_area_matches_the_plain_one() -> None:
    """Stations over 8 degrees, more points than one chunk holds: pruning stations far from a
    chunk changes nothing."""
    rng = np.random.default_rng(3)
    model = Model(max_range_km=40)
    sites = _random_sites(rng, 120, 4.0)
    field = LinkField(Sites.of([(s[0], s[1], None, None, s[4], s[5]) for s in sites]), model)
    g = Grid(0.5, 41.5, 7.5, 48.5, 0.1)
    lat, lng = g.points()
    assert lat.size * len(field) > 4 * (1 << 16)
    best, count = field.best_and_count(lat, lng, -125.0)
    plain = [(s[0], s[1], float("nan"), float("nan"), s[4], s[5]) for s in sites]
    for p in rng.choice(lat.size, 150, replace=False):
        expected = sorted((scalar_margin(s, lat[p], lng[p], model) for s in plain), reverse=True)
        assert best[p] == pytest.approx(expected[0], abs=0.02)
        assert count[p] == sum(1 for e in expected if e > -125.0)


def test_no_station_in_reach_gives_the_floor_and_no_count() -> None:
    field = LinkField(Sites.of([]), Model())
    best, count = field.best_and_count(np.array([45.0]), np.array([4.0]), 0.0)
    assert best[0] == FLOOR and count[0] == 0
    one = LinkField(Sites.of([(45.0, 4.0, None, None, 868.13, -142.0)]), Model(max_range_km=50))
    top = one.best(np.array([45.0 + 60 / 111.195, 45.0]), np.array([4.0, 4.0]), 3)
    assert (top[:, 0] == FLOOR).all()  # beyond the maximum range
    assert top[0, 1] > 90 and (top[1:, 1] == FLOOR).all()  # 10 m away, for a 0 dBm device


def test_grid_points_run_row_major_from_the_north_west_corner() -> None:
    g = Grid(min_lng=3.0, min_lat=44.0, max_lng=3.25, max_lat=44.1, step=0.05)
    assert (g.cols, g.rows) == (6, 3)
    lat, lng = g.points()
    assert lat.size == 18
    assert (lat[0], lng[0]) == (44.1, 3.0)
    assert lng[5] == pytest.approx(3.25) and lat[5] == 44.1
    assert lat[6] == pytest.approx(44.05) and lng[6] == 3.0
    assert lat[-1] == pytest.approx(44.0) and lng[-1] == pytest.approx(3.25)


@pytest.mark.parametrize(("lat", "lng"), [(45.0, 4.0), (-33.9, 151.2), (0.0, 179.999), (89.99, 10.0)])
def test_disc_samples_cover_the_radius_and_no_farther(lat: float, lng: float) -> None:
    slat, slng, per = disc_samples(np.array([lat]), np.array([lng]), 1000.0)
    assert per == 19 and slat.size == 19
    assert (slng >= -180).all() and (slng < 180).all()
    distances = [haversine_km(lat, lng, a, b) * 1000 for a, b in zip(slat, slng, strict=True)]
    assert distances[0] == pytest.approx(0, abs=1e-6)
    assert max(distances) == pytest.approx(1000, rel=0.01) if abs(lat) < 80 else max(distances) <= 1010


def test_averaging_over_a_disc_that_holds_no_station_keeps_the_centre_value() -> None:
    """Hata's loss is linear in log(distance), harmonic in the plane: its mean over a disc not
    holding the station is its value at the centre (up to the 19-point sampling)."""
    field = LinkField(Sites.of([(45.0, 4.0, None, None, 868.13, -142.0)]), Model())
    at = np.array([45.0 + 5 / 111.195]), np.array([4.0])
    centre = averaged_best(field, *at, 0.0, 1)[0, 0]
    assert averaged_best(field, *at, 2000.0, 1)[0, 0] == pytest.approx(centre, abs=0.2)
    near = np.array([45.0 + 0.3 / 111.195]), np.array([4.0])
    assert averaged_best(field, *near, 1000.0, 1)[0, 0] < averaged_best(field, *near, 0.0, 1)[0, 0] - 3
