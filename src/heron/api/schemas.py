"""Base for request bodies: camelCase on the wire, unknown fields refused with 400, and the
Sigfox v2 fields Heron does not implement accepted and ignored."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
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


# `offset` above this is refused with 400 (a larger one overflows the databases' 64-bit OFFSET: 500).
MAX_OFFSET = 2**31 - 1
# An integer compared with an `integer` column: PostgreSQL's is 32 bits, and a larger value in a
# query is a 500 there (SQLite's 64-bit one fails further out).
MAX_INT = 2**31 - 1


def reject_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL: refuse it at the edge with 400 naming the field, not in
    SQL with a 500 (SQLite would store it, so both databases would disagree)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, list):
        for item in value:
            reject_nul(item)
    return value


# For free-text query parameters: `Annotated[str | None, Query(...), NoNul]`.
NoNul = AfterValidator(reject_nul)


class ApiModel(BaseModel):
    """A request body. Strict: a JSON value of another type than the field's is refused (400
    naming the field), never coerced: "1" is not a number, true not an integer, 7 not a string;
    an integer is a number. Bodies hold only JSON types (str, int, float, bool, lists, objects,
    Literal): strict mode in FastAPI's Python-mode validation would refuse a str for an Enum or a
    datetime, so such a field needs `Field(strict=False)` or a `str` parsed by the service.

    `null` is the field absent (`null_is_absent`; Sigfox's document declares nothing nullable,
    and clients generated from it send null for a value they do not set): a required field is
    then "field required", an optional one takes its default. Update bodies turn this off and
    decide per field (`UpdateModel`)."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, str_strip_whitespace=False, strict=True
    )
    ignored_fields: ClassVar[frozenset[str]] = SIGFOX_IGNORED
    null_is_absent: ClassVar[bool] = True
    # Fields of rows taken as given (`offload.rows_as_given`): each row is checked later in a
    # worker thread; walking 100,000 of them here held the event loop 13-40 ms.
    rows_checked_later: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if isinstance(data, dict):
            absent = cls.null_is_absent
            return {k: v for k, v in data.items() if k not in cls.ignored_fields and not (absent and v is None)}
        return data

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in cls.rows_checked_later:
            return value
        return reject_nul(value)


# The query parameters every native list route takes (Sigfox API v2's names and bounds).
NameFilter = Annotated[str | None, Query(max_length=100), NoNul]
GroupIdsFilter = Annotated[list[str] | None, Query(alias="groupIds")]
Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def id_list(values: list[str] | None) -> list[str]:
    """Query lists come repeated (`?a=1&a=2`) or comma-separated (`?a=1,2`)."""
    out: list[str] = []
    for v in values or []:
        out += [p for p in v.split(",") if p]
    return out


class UpdateModel(ApiModel):
    """A PUT body: an absent field stays unchanged; `null` unsets the fields listed in `unsettable`
    and is refused, naming the field, for those that must keep a value."""

    unsettable: ClassVar[frozenset[str]] = frozenset()
    null_is_absent = False

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_unsettable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.unsettable:
            raise ValueError("cannot be null: omit the field to keep its value")
        return value

    def unset(self, name: str) -> bool:
        """True when the body sets `name` to null explicitly."""
        return name in self.model_fields_set and getattr(self, name) is None
