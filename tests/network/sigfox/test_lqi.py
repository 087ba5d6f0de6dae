"""The LQI table of sigfox-callbacks.md, edge by edge, for both zone families."""

from __future__ import annotations

import pytest

from heron.network.sigfox.lqi import AVERAGE, EXCELLENT, GOOD, LIMIT, NA, lqi


@pytest.mark.parametrize(
    ("rssi", "stations", "zone", "expected"),
    [
        (-100.0, 3, "RC1", EXCELLENT),
        (-121.99, 3, "RC1", EXCELLENT),
        (-122.0, 3, "RC1", GOOD),  # -135 < RSSI <= -122 with 3 stations
        (-134.99, 3, "RC1", GOOD),
        (-100.0, 2, "RC1", GOOD),  # RSSI > -122 with 1-2 stations
        (-100.0, 1, "RC1", GOOD),
        (-122.0, 2, "RC1", AVERAGE),
        (-134.0, 1, "RC1", AVERAGE),
        (-135.0, 3, "RC1", LIMIT),
        (-140.0, 1, "RC1", LIMIT),
        (-113.0, 3, "RC2", EXCELLENT),
        (-114.0, 3, "RC2", GOOD),
        (-114.0, 1, "RC2", AVERAGE),
        (-127.0, 3, "RC4", LIMIT),
        (-126.5, 5, "RC4", GOOD),
        (-125.0, 3, "RC5", GOOD),  # RC5 follows the RC1 thresholds
        (None, 3, "RC1", NA),
        (-100.0, 0, "RC1", NA),
    ],
)
def test_lqi_follows_the_public_table(rssi: float | None, stations: int, zone: str, expected: int) -> None:
    assert lqi(rssi, stations, zone) == expected
