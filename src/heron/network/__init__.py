"""Network adapters: how radio frames reach Heron (Sigfox-style base stations, LoRaWAN gateways)."""
