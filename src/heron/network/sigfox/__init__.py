"""Sigfox-style base stations: their registry, credentials, ingest and link quality."""
