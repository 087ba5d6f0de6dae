"""A fast callback receiver for the delivery benchmark: asyncio + uvloop raw streams, HTTP/1.1
keep-alive, in a process of its own (`python -m bench.receiver PORT LOGFILE`; prints "ready").

Every request is answered `204` (up) or `503` (down) and logged as one tab-separated line:
arrival (epoch seconds, wall clock), status, `webhook-id`, body lines, path. Control, answered
200 and not logged: `POST /_down`, `POST /_up`, `GET /_stats` (flushes the log first; JSON:
requests, ok, refused, lines). SIGTERM flushes the log and exits."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import uvloop

OK = b"HTTP/1.1 204 No Content\r\n\r\n"
DOWN = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


def _answer(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def main() -> None:
    port, log_path = int(sys.argv[1]), sys.argv[2]
    log = open(log_path, "w", buffering=1 << 20)  # noqa: SIM115 - closed at exit
    state = {"up": True}
    counts = {"requests": 0, "ok": 0, "refused": 0, "lines": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                _method, path, _version = lines[0].split(b" ", 2)
                length, hook_id = 0, b"-"
                for line in lines[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                    elif line[:11].lower() == b"webhook-id:":
                        hook_id = line[11:].strip()
                body = await reader.readexactly(length) if length else b""
                arrival = time.time()
                if path.startswith(b"/_"):
                    if path == b"/_down":
                        state["up"] = False
                    elif path == b"/_up":
                        state["up"] = True
                    log.flush()
                    writer.write(_answer(json.dumps(counts | {"up": state["up"]}).encode()))
                    continue
                n = body.count(b"\n") + 1 if body else 0
                counts["requests"] += 1
                if state["up"]:
                    counts["ok"] += 1
                    counts["lines"] += n
                    writer.write(OK)
                    status = 204
                else:
                    counts["refused"] += 1
                    writer.write(DOWN)
                    status = 503
                log.write(f"{arrival:.6f}\t{status}\t{hook_id.decode()}\t{n}\t{path.decode()}\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    try:
        uvloop.run(run())
    finally:
        log.close()


if __name__ == "__main__":
    main()
