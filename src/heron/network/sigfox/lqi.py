"""Link quality (LQI) of a Sigfox-style message from its best RSSI and how many stations heard
it, by the public table (docs/ARCHITECTURE.md, "Link quality"). SNR is not used."""

from __future__ import annotations

from heron.radio import AVERAGE, EXCELLENT, GOOD, LIMIT, NA

RADIO_ZONES = ("RC1", "RC2", "RC3", "RC4", "RC5", "RC6", "RC7")

# (upper bound of LIMIT, upper bound of AVERAGE/GOOD split) per zone family, in dBm.
_THRESHOLDS = {"RC2": (-127.0, -114.0), "RC4": (-127.0, -114.0)}
_DEFAULT = (-135.0, -122.0)


def lqi(best_rssi: float | None, stations: int, radio_zone: str = "RC1") -> int:
    """EXCELLENT: above the upper threshold and heard by 3 or more stations; GOOD: above it with
    1-2 stations, or between the thresholds with 3+; AVERAGE: between them with 1-2; LIMIT: at or
    below the lower one; NA without an RSSI."""
    if best_rssi is None or stations < 1:
        return NA
    low, high = _THRESHOLDS.get(radio_zone, _DEFAULT)
    if best_rssi <= low:
        return LIMIT
    many = stations >= 3
    if best_rssi > high:
        return EXCELLENT if many else GOOD
    return GOOD if many else AVERAGE
