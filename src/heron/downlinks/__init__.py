"""Downlinks: what Heron sends back to devices, queued per device, decided per uplink that asks."""
