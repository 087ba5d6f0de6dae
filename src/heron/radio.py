"""What the network-neutral core (uplink/, downlink/, delivery/, messages/) asks of a radio
network. Each adapter under network/ gives one `Network` (network/sigfox/radio.py; LoRaWAN's
next) and hands it to the uplink writer with its frames; the core never imports an adapter.

The two networks differ in these ways only, as far as the core is concerned:

- frame identity (the dedup key): Sigfox, device + 12-bit sequence number; LoRaWAN, device +
  32-bit FCnt (the adapter rebuilds it from 16 bits and checks the MIC first);
- the sequence rule: Sigfox wraps at 4096, half the circle ahead is new; LoRaWAN's 2^32 never
  wraps in practice;
- when the device listens: Sigfox ~20 s after its uplink; LoRaWAN RX1, 1 s after (RX2 2 s);
- link quality: Sigfox's public LQI table by radio zone; LoRaWAN, the same scale from RSSI.

A network is also named by `devices.network`. Stations (base stations, gateways) are the core's
(heron.stations): a station delivers the devices in its group's subtree, or its one device type."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

LIMIT, AVERAGE, GOOD, EXCELLENT, NA = 0, 1, 2, 3, 4  # a message's `lqi`: the api.md enum
LQI_NAMES = {LIMIT: "LIMIT", AVERAGE: "AVERAGE", GOOD: "GOOD", EXCELLENT: "EXCELLENT", NA: "NA"}


class Network(Protocol):
    @property
    def name(self) -> str:
        """As devices carry it in `devices.network` (SIGFOX, LORAWAN)."""

    @property
    def sequence_modulo(self) -> int:
        """Where sequence numbers wrap: a forward step of less than half of it is new (the gap
        counted as lost frames), any other step an out-of-order frame."""

    @property
    def downlink_delay(self) -> timedelta:
        """How long after its uplink a device listens for its downlink."""

    def link_quality(self, best_rssi: float | None, receptions: int, radio_zone: str) -> int:
        """A message's `lqi` (LIMIT..EXCELLENT, NA) from its best RSSI and how many stations heard it."""

    def device_power_dbm(self, radio_zone: str) -> float | None:
        """The transmit power the location estimator assumes for a device heard in this zone
        (None: the estimator's default)."""
