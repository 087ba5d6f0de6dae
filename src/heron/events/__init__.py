"""Events of devices and base stations (communication loss, overusage, token expiry, station
offline): `service` writes and reads them, `models` holds their tables."""
