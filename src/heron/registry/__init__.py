"""The device registry: contracts, device profiles, device types (devices and jobs follow)."""
