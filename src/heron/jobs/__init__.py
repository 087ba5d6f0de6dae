"""The one job engine behind every bulk operation (Sigfox series operations, native bulk
endpoints, Senet register/activate/deactivate/update)."""
