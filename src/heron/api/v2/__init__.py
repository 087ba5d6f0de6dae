"""The native API, laid out like the Sigfox API v2."""

PREFIX = "/api/v2"
