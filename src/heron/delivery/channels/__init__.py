"""Channels: how a claimed outbox row goes out. One protocol behind URL, BATCH_URL and EMAIL,
and the job callbacks (a URL request whose address and sealed headers the row itself carries).

The worker hands a channel one *batch* at a time and gets back one `Result` per item, in order:
a URL or job batch holds one item (one request each), a BATCH_URL batch holds one callback's
gathered messages (one request for all, the same result for each), an EMAIL batch one callback's
messages (one mail each, over one SMTP connection)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol

from heron.delivery import callbacks as callbacks_service
from heron.delivery import templates
from heron.delivery.models import Callback
from heron.keys import Keyring
from heron.registry.models import DeviceType

__all__ = ["JOB", "Channel", "Compiled", "Item", "Owed", "Result", "compiled", "failed"]

JOB = "JOB"  # the channel (and `Delivery.event`) of job callbacks


@dataclass(frozen=True, slots=True)
class Owed:
    """A claimed outbox row, as the worker and the channels read it (`deliveries` columns)."""

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id",
        "key",
        "callback_id",
        "device_id",
        "message_id",
        "event",
        "variables",
        "attempts",
        "next_at",
        "created_at",
        "duplicate_of",
        "reception_id",
    )

    id: int
    key: str
    callback_id: int | None
    device_id: int | None
    message_id: int | None
    event: str
    variables: str | None
    attempts: int
    next_at: datetime
    created_at: datetime
    duplicate_of: int | None  # a sendDuplicate copy: the delivery it copies
    reception_id: int | None  # ... and the reception whose network values it carries


@dataclass
class Item:
    """One claimed delivery, with what its templates render (None when that could not be
    computed: `error` says why)."""

    delivery: Owed
    callback: Callback | None  # None for job callbacks
    device_type: DeviceType | None
    values: dict[str, object] | None
    error: str | None = None

    @property
    def channel(self) -> str:
        return self.callback.channel if self.callback is not None else JOB


@dataclass(frozen=True)
class Result:
    """The outcome of one item: `status` is the HTTP status when one came back; `request` is what
    was sent, for `Delivery.last_request` (no secrets)."""

    ok: bool
    status: int | None = None
    error: str | None = None
    request: dict[str, object] = field(default_factory=dict)
    body: bytes = b""  # the answer (a BIDIR answer carries the downlink)
    refused: bool = False  # a destination Heron does not send to: failed for good, not retried

    def describe(self) -> str | None:
        """The failure as recorded in `Delivery.last_error`."""
        if self.ok:
            return None
        return (self.error or (f"HTTP {self.status}" if self.status is not None else "failed"))[:1000]


def failed(batch: Sequence[Item], error: str) -> list[Result]:
    return [Result(False, error=item.error or error) for item in batch]


class Channel(Protocol):
    """Sends one batch; one result per item, in the batch's order. Never raises for a failure
    of the destination (that is a result); an exception is an internal error."""

    async def send(self, batch: Sequence[Item]) -> list[Result]: ...


# -- compiled templates, once per version of a callback -----------------------------------------------
@dataclass
class Compiled:
    url: templates.Template | None = None
    headers: dict[str, templates.Template] = field(default_factory=dict)
    body: templates.Template | None = None  # URL
    line: templates.Template | None = None  # BATCH_URL
    subject: templates.Template | None = None  # EMAIL
    message: templates.Template | None = None  # EMAIL


_COMPILED: dict[tuple[int, datetime | None, datetime], Compiled] = {}


def compiled(keyring: Keyring, cb: Callback, dt: DeviceType) -> Compiled:
    """A callback's templates for its channel, compiled once per version of the callback."""
    key = (cb.id, cb.updated_at, cb.created_at)
    found = _COMPILED.get(key)
    if found is None:
        available = templates.variables_for(
            cb.callback_type, cb.callback_subtype, custom_fields=callbacks_service.custom_fields(cb, dt)
        )
        found = Compiled()
        if cb.channel == "EMAIL":
            found.subject = templates.compile_template(cb.subject or "", "header", available, "subject")
            found.message = templates.compile_template(cb.message or "", "text", available, "message")
        else:
            found.url = templates.compile_template(cb.url or "", "url", available, "url")
            found.headers = {
                k: templates.compile_template(v, "header", available, k)
                for k, v in callbacks_service.stored_headers(keyring, cb).items()
            }
            if cb.channel == "BATCH_URL":
                found.line = templates.compile_template(cb.line_pattern or "", "text", available, "linePattern")
            elif cb.body_template is not None and cb.http_method != "GET":
                context = callbacks_service.CONTENT_CONTEXTS.get(cb.content_type or "", "text")
                found.body = templates.compile_template(cb.body_template, context, available, "bodyTemplate")
        if len(_COMPILED) > 4096:
            _COMPILED.clear()
        _COMPILED[key] = found
    return found
