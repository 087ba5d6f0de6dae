"""Base for request bodies: camelCase on the wire, unknown fields refused with 400, and the
Sigfox v2 fields Heron does not implement accepted and ignored."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel

# Fields of the Sigfox v2 document (group, user and API-user bodies) that Heron accepts and ignores.
SIGFOX_IGNORED = frozenset(
    {
        "fields",
        "actions",
        "resources",
        "nameCI",
        "baseStations",
        "maintenances",
        "sendWelcomeEmail",
        "networkOperatorId",
        "billable",
        "technicalEmail",
        "clientName",
        "clientEmail",
        "clientPhone",
        "stationsVisibility",
        "countryISOAlpha3",
        "currentPrototypeCount",
        "maxPrototypeAllowed",
        "geolocPayloadConfigId",
    }
)


class ApiModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, str_strip_whitespace=False
    )
    ignored_fields: ClassVar[frozenset[str]] = SIGFOX_IGNORED

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in cls.ignored_fields}
        return data


def id_list(values: list[str] | None) -> list[str]:
    """Query lists come repeated (`?a=1&a=2`) or comma-separated (`?a=1,2`)."""
    out: list[str] = []
    for v in values or []:
        out += [p for p in v.split(",") if p]
    return out
