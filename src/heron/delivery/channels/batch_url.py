"""The BATCH_URL channel: one callback's messages gathered (by the worker, up to 1 s) into one
request whose body has one line per message, rendered from the callback's `linePattern` (the
`text` context) and joined by `\\n`, in the order of the outbox (per device, oldest first).
Inside a line, every character str.splitlines() breaks on becomes a space, so a line stays one
line for a receiver splitting on `\\n` and for one splitting the Unicode way (NEL, U+2028 ...).

The URL and header templates render with the first message's values. The request's
`webhook-id` is derived from the keys of the deliveries it carries, so a retry of the same
batch carries the same id. Every delivery of the batch gets the request's result."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from heron.delivery import callbacks as callbacks_service
from heron.delivery.channels import Item, Result, compiled
from heron.delivery.channels.url import TEXT_CONTENT_TYPE, Http, Outgoing, base_headers

# CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029: what str.splitlines() breaks on.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", " "))


def batch_key(keys: Sequence[str]) -> str:
    return hashlib.sha256(",".join(keys).encode()).hexdigest()[:32]


class BatchUrlChannel:
    def __init__(self, http: Http) -> None:
        self.http = http

    async def send(self, batch: Sequence[Item]) -> list[Result]:
        results: list[Result | None] = [None] * len(batch)
        lines: list[str] = []
        carried: list[int] = []  # the indexes of the items in the request
        first = next((i for i in batch if i.callback is not None and i.device_type is not None), None)
        if first is None or first.callback is None or first.device_type is None:
            return [Result(False, error=i.error or "nothing to send") for i in batch]
        cb, dt = first.callback, first.device_type
        keyring = self.http.keyring
        try:
            templates = compiled(keyring, cb, dt)
            assert templates.line is not None and templates.url is not None
        except Exception as exc:
            return [Result(False, error=f"cannot render the request: {exc}") for _ in batch]
        for n, item in enumerate(batch):
            if item.values is None:
                results[n] = Result(False, error=item.error or "nothing to send")
                continue
            try:
                line = templates.line.render(item.values)
            except Exception as exc:
                results[n] = Result(False, error=f"cannot render the line: {exc}")
                continue
            lines.append(line.translate(_LINE_BREAKS))
            carried.append(n)
        if carried:
            values = batch[carried[0]].values
            assert values is not None
            try:
                headers = base_headers(keyring, cb, dt, values)
                headers["Content-Type"] = TEXT_CONTENT_TYPE
                out = Outgoing(
                    cb.http_method or "POST", templates.url.render(values), headers, "\n".join(lines).encode()
                )
                secret = callbacks_service.stored_signing_secret(keyring, cb)
            except Exception as exc:
                outcome = Result(False, error=f"cannot render the request: {exc}")
            else:
                key = batch_key([batch[n].delivery.key for n in carried])
                outcome = await self.http.request(out, key, secret=secret, send_sni=cb.send_sni)
                lines_sent = outcome.request | {"lines": len(lines)}
                outcome = Result(outcome.ok, outcome.status, outcome.error, lines_sent, refused=outcome.refused)
            for n in carried:
                results[n] = outcome
        return [r if r is not None else Result(False, error="nothing to send") for r in results]
