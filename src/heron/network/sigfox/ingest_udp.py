"""The base-station ingest over UDP (`HERON_INGEST_UDP_PORT`, off by default): one datagram is
one request of `POST /ingest/sigfox` with the station's credential inside, answered by one
datagram once its receptions are committed. The validation, the credential cache and the
store are the HTTP route's own (heron.network.sigfox.ingest_http), so both forms accept and refuse alike.
Runs in the API process's event loop; `reuse_port` lets `--workers N` share the port.
Protocol: docs/INGEST.md, "Over UDP"."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from typing import Any

import orjson
from prometheus_client import Counter
from pydantic import Field, ValidationError

from heron.api.errors import field_errors, validation_body
from heron.errors import NotAuthenticated, Unavailable
from heron.network.sigfox.ingest_http import IngestBody, _credential, _frames, _invalid, _store
from heron.observability import REGISTRY
from heron.runtime.context import AppContext

log = logging.getLogger("heron.ingest")

# Larger datagrams are refused (400). 32 KiB is about 200 receptions; the IPv4 limit is 65,507.
MAX_DATAGRAM = 32 * 1024
# Datagrams being handled at once; more are dropped unanswered, as a full network would.
MAX_IN_FLIGHT = 1000
# Asked of the kernel (capped by net.core.rmem_max): room for a burst between two reads.
RECEIVE_BUFFER = 4 * 1024 * 1024
# The errors a 400 reply names at most (the HTTP 400 names all).
MAX_ERRORS = 20

DATAGRAMS = Counter(
    "heron_ingest_udp_datagrams_total",
    "Station ingest datagrams by outcome: accepted (committed), invalid (400), unauthenticated "
    "(401), unavailable (503, the uplink writer), failed (500), dropped (too many in flight, "
    "not answered).",
    ["outcome"],
    registry=REGISTRY,
)


class Datagram(IngestBody):
    """A request of the HTTP form (its `receptions`, validated the same way) with the station's
    credential and the station's own request id, which the reply carries back."""

    station: str = Field(max_length=64, description="the station's id (hex)")
    secret: str = Field(max_length=256)
    id: int = Field(ge=0, le=2**63 - 1, description="the station's request id, echoed in the reply")


class IngestDatagrams:
    """The UDP listener of one API process. `start` binds, `stop` stops taking datagrams and
    answers the ones in hand (their frames may already be committed) before closing."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.address: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self, host: str, port: int) -> None:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(host, port), reuse_port=True
        )
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):  # a platform without it keeps its default
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._transport = transport
        self.address = sock.getsockname()[:2]
        log.info("ingest.udp.listening", extra={"host": self.address[0], "port": self.address[1]})

    async def stop(self) -> None:
        self._stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._stopping or len(self._tasks) >= MAX_IN_FLIGHT:
            DATAGRAMS.labels("dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        outcome, reply = await self._handle(data)
        DATAGRAMS.labels(outcome).inc()
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    async def _handle(self, raw: bytes) -> tuple[str, bytes | None]:
        """What became of a datagram, and the reply (None: none may be sent)."""
        if len(raw) > MAX_DATAGRAM:
            message = f"a datagram of at most {MAX_DATAGRAM} bytes is expected, got {len(raw)}"
            errors = [{"type": "body", "field": "body", "message": message}]
            return "invalid", _fit({"id": _request_id(raw), "status": 400} | validation_body(errors), len(raw))
        try:
            datagram = Datagram.model_validate_json(raw)
        except ValidationError as exc:
            body = validation_body(field_errors(_invalid(exc, raw)))
            return "invalid", _fit({"id": _request_id(raw), "status": 400} | body, len(raw))
        # The credential in its HTTP form: one cache for both forms, and the same check.
        authorization = "Basic " + base64.b64encode(f"{datagram.station}:{datagram.secret}".encode()).decode()
        try:
            credential = _credential(self.ctx, authorization)
            frames = _frames(datagram, credential.station_id)
            await _store(self.ctx, frames, credential)
        except NotAuthenticated:
            return "unauthenticated", orjson.dumps({"id": datagram.id, "status": 401})
        except Unavailable as exc:
            return "unavailable", orjson.dumps({"id": datagram.id, "status": 503, "message": exc.message})
        except Exception:
            log.exception("ingest.udp.failed", extra={"station": datagram.station})
            return "failed", orjson.dumps({"id": datagram.id, "status": 500, "message": "internal error"})
        return "accepted", b'{"id":%d,"accepted":%d}' % (datagram.id, len(frames))


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: IngestDatagrams) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.listener.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier reply (the station went away): nothing to do.
        log.debug("ingest.udp.error_received", extra={"error": str(exc)})


def _request_id(raw: bytes) -> int | None:
    """The `id` of a datagram refused as a whole, when it can be read at all (else null)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    request_id = value.get("id") if isinstance(value, dict) else None
    return request_id if type(request_id) is int else None


def _fit(reply: dict[str, Any], limit: int) -> bytes | None:
    """`reply` encoded in at most `limit` bytes (the datagram's own length): with fewer errors,
    else only `id` and `status`, else none. A refusal is sent before any credential is checked,
    and a UDP sender's address can be forged: this keeps Heron from amplifying forged traffic."""
    errors = reply.get("errors", [])[:MAX_ERRORS]
    while True:
        out = orjson.dumps(reply | {"errors": errors})
        if len(out) <= limit:
            return out
        if not errors:
            break
        errors = errors[:-1]
    out = orjson.dumps({"id": reply["id"], "status": reply["status"]})
    return out if len(out) <= limit else None
