"""The Senet-compatible integration API (`/rest/integration`), same parameters, bodies, status
codes and message texts as the Senet seed; thin routers over the registry and the job engine."""

PREFIX = "/rest/integration"
