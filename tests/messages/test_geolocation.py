"""The network geolocation estimator (heron.geolocation): exact cases, and properties on
synthetic stations and devices with known positions (RSSI from the same path-loss model plus
shadowing noise, fixed seed). Error figures are `python -m bench geolocation`'s; here only
bounds loose enough to be properties of the method."""

from __future__ import annotations

import math
import random

import pytest

from heron.geolocation import (
    MIN_RADIUS_M,
    RADIUS_FACTOR,
    Fix,
    Reading,
    Stations,
    distance_m,
    locate,
    locate_heard,
    locate_many,
    rssi_at,
)

EARTH_M = 6_371_000.0
SPACING_M = 10_000.0
ORIGIN = (45.0, 4.0)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance."""
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * EARTH_M * math.asin(math.sqrt(h))


def _offset(x: float, y: float) -> tuple[float, float]:
    """The point x metres east and y metres north of ORIGIN."""
    lat = ORIGIN[0] + math.degrees(y / EARTH_M)
    return lat, ORIGIN[1] + math.degrees(x / (EARTH_M * math.cos(math.radians(ORIGIN[0]))))


GRID = [_offset(i * SPACING_M, j * SPACING_M) for i in range(7) for j in range(7)]


def _heard(device: tuple[float, float], rng: random.Random, sigma: float) -> list[Reading]:
    """What the grid's stations hear of a device: the model's RSSI plus shadowing, above -142 dBm,
    loudest first."""
    out = []
    for station in GRID:
        rssi = rssi_at(_metres(device, station)) + rng.gauss(0, sigma)
        if rssi > -142.0:
            out.append(Reading(station[0], station[1], rssi))
    return sorted(out, key=lambda r: -(r.rssi or 0))


def _devices(n: int, rng: random.Random) -> list[tuple[float, float]]:
    # Inside the grid, away from its edges (a device outside it is heard from one side only).
    return [_offset(rng.uniform(2, 4) * SPACING_M, rng.uniform(2, 4) * SPACING_M) for _ in range(n)]


def _median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def test_one_station_gives_its_position_and_the_estimated_distance_as_radius() -> None:
    fix = locate([Reading(45.1, 4.2, -120.0)])
    assert fix is not None
    assert (fix.lat, fix.lng) == (45.1, 4.2)
    assert fix.radius == round(distance_m(-120.0))
    assert 1_000 < fix.radius < 10_000  # -120 dBm is a few km in a suburban model


def test_a_message_without_a_usable_reception_has_no_fix() -> None:
    assert locate([]) is None
    assert locate([Reading(None, None, -120.0), Reading(45.0, 4.0, None), Reading(45.0, None, -110.0)]) is None


def test_unusable_receptions_are_left_out_of_a_fix() -> None:
    alone = locate([Reading(45.1, 4.2, -120.0)])
    assert locate([Reading(45.1, 4.2, -120.0), Reading(None, None, -90.0), Reading(46.0, 5.0, None)]) == alone


def test_two_stations_hearing_alike_put_the_device_between_them() -> None:
    fix = locate([Reading(45.0, 4.0, -125.0), Reading(45.2, 4.2, -125.0)])
    assert fix is not None
    assert fix.lat == pytest.approx(45.1) and fix.lng == pytest.approx(4.1)
    assert fix.radius == round(RADIUS_FACTOR * distance_m(-125.0) / math.sqrt(2))


def test_the_louder_station_pulls_the_fix_towards_it() -> None:
    fix = locate([Reading(45.0, 4.0, -105.0), Reading(45.2, 4.0, -135.0)])
    assert fix is not None
    assert 45.0 < fix.lat < 45.02


def test_a_declared_stronger_link_budget_means_a_larger_distance() -> None:
    assert distance_m(-130.0, power_dbm=22.0) > distance_m(-130.0)
    loud = locate([Reading(45.0, 4.0, -130.0, gain_dbi=10.0)])
    assert loud is not None and loud.radius > round(distance_m(-130.0))


def test_the_radius_is_never_zero_however_loud_the_device() -> None:
    fix = locate([Reading(45.0, 4.0, 20.0), Reading(45.0, 4.0, 20.0)])
    assert fix is not None and fix.radius == MIN_RADIUS_M
    absurd = locate([Reading(45.0, 4.0, -400.0)])
    assert absurd is not None and 0 < absurd.radius <= 1_000_000


def test_a_message_heard_across_the_antimeridian_is_placed_on_it() -> None:
    fix = locate([Reading(0.0, 179.9, -125.0), Reading(0.0, -179.9, -125.0)])
    assert fix is not None
    assert abs(fix.lng) == pytest.approx(180.0)


def test_a_batch_gives_each_message_its_own_fix() -> None:
    rng = random.Random(7)
    messages = [_heard(d, rng, 7.0)[: rng.randint(0, 5)] for d in _devices(200, rng)]
    messages[3] = [Reading(None, None, -120.0)]
    batch = locate_many(messages)
    assert batch == [locate(m) for m in messages]
    assert batch[3] is None and any(isinstance(f, Fix) for f in batch)


def test_without_noise_a_device_at_a_station_is_placed_near_it() -> None:
    rng = random.Random(1)
    for station in GRID[16:20]:
        device = (station[0] + 0.001, station[1] + 0.001)  # ~130 m away
        fix = locate(_heard(device, rng, 0.0))
        assert fix is not None
        assert _metres((fix.lat, fix.lng), device) < 1_000


def test_the_estimate_improves_with_more_stations() -> None:
    """Devices at known positions in a 10 km grid, 7 dB shadowing: the median error falls as
    more of the stations that heard the device are used (the loudest first)."""
    rng = random.Random(12)
    errors: dict[int, list[float]] = {1: [], 3: [], 99: []}
    inside: list[bool] = []
    for device in _devices(600, rng):
        heard = _heard(device, rng, 7.0)
        assert len(heard) >= 3  # the grid is dense enough
        for k, found in errors.items():
            fix = locate(heard[:k])
            assert fix is not None
            found.append(_metres((fix.lat, fix.lng), device))
            if k == 99:
                inside.append(found[-1] <= fix.radius)
    one, three, every = (_median(errors[k]) for k in (1, 3, 99))
    assert every < three < one
    assert every < 0.5 * SPACING_M  # loose: the benchmark measures about a quarter of the spacing
    # The radius is meant as a ~68 % circle: far from always and far from never.
    assert 0.4 < sum(inside) / len(inside) < 0.95


def test_messages_given_as_station_ids_and_rssi_locate_as_readings_do() -> None:
    """The uplink writer's form: (station id, RSSI) pairs and a table of stations; a station
    missing from the table, or without a position, is left out like a reading without one."""
    rng = random.Random(3)
    table = {
        n: Reading(*station, None, 22.0 if n % 5 == 0 else None, 8.0 if n % 7 == 0 else None)
        for n, station in enumerate(GRID)
    }
    table[len(GRID)] = Reading(None, None, None)  # a station without a position
    counts, ids, rssi, readings = [], [], [], []
    for device in _devices(300, rng):
        picked = rng.sample(range(len(GRID) + 2), 4)  # the last two: no position, not in the table
        heard: list[tuple[int, float | None]] = [
            (n, rssi_at(_metres(device, GRID[n])) + rng.gauss(0, 7) if n < len(GRID) else -100.0) for n in picked
        ]
        heard.append((0, None))  # no RSSI
        counts.append(len(heard))
        ids += [n for n, _ in heard]
        rssi += [r for _, r in heard]
        known = [(table[n], r) for n, r in heard if n in table]
        readings.append([Reading(t.lat, t.lng, r, t.power_dbm, t.gain_dbi) for t, r in known])
    assert locate_heard(counts, ids, rssi, Stations(table)) == locate_many(readings)
    assert locate_heard([2], [1, 2], [-120.0, -121.0], Stations({})) == [None]
    assert locate_heard([0, 1], [1], [-120.0], Stations(table)) == [None, locate([table[1]._replace(rssi=-120.0)])]
