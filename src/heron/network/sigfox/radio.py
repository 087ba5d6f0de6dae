"""The Sigfox network as the core sees it (heron.radio.Network)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from heron.network.sigfox.lqi import lqi

# A class 0U device's transmit power where it is not the estimator's default (14 dBm, RC1).
_DEVICE_POWER_DBM = {"RC2": 22.0, "RC4": 22.0}


@dataclass(frozen=True)
class Sigfox:
    name: str = "SIGFOX"
    sequence_modulo: int = 4096  # 12 bits
    downlink_delay: timedelta = timedelta(seconds=20)  # the device listens about 20 s after its uplink

    def link_quality(self, best_rssi: float | None, receptions: int, radio_zone: str) -> int:
        return lqi(best_rssi, receptions, radio_zone)

    def device_power_dbm(self, radio_zone: str) -> float | None:
        return _DEVICE_POWER_DBM.get(radio_zone)

    def __reduce__(self) -> str:
        # Pickled (to the uplink writer process, with every request) as the module's NETWORK.
        return "NETWORK"


NETWORK = Sigfox()
