"""A small HTTP/1.1 keep-alive load generator (asyncio + uvloop, raw streams): N connections
send one request each in turn for D seconds. Run as a separate process so its CPU is its own:
`python -m bench.loadgen URL CONNECTIONS SECONDS [HEADER ...]` prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit

import uvloop


async def _worker(
    host: str, port: int, request: bytes, stop_at: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(url: str, connections: int, seconds: float, headers: list[str]) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{h}\r\n" for h in headers)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(_worker(host, port, request, stop_at, latencies, statuses) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "seconds": elapsed,
        "rps": n / elapsed,
        "statuses": statuses,
        "p50_ms": latencies[n // 2] * 1000 if n else None,
        "p99_ms": latencies[int(n * 0.99)] * 1000 if n else None,
        "loadgen_cpu_pct": 100 * cpu / elapsed,
    }


def main() -> None:
    url, connections, seconds, *headers = sys.argv[1:]
    result = uvloop.run(run(url, int(connections), float(seconds), headers))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
