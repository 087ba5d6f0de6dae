"""Authenticated `GET /api/v2/groups/{id}` on SQLite, 32 concurrent keep-alive clients, beside an
unauthenticated `GET /api/health` in the same run; plus the cost of authentication alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import heron_server, target, temp_dir
from heron.bootstrap import prepare
from heron.config import Settings
from heron.runtime.context import build_context
from heron.tenancy import api_users, groups
from heron.tenancy.access import SYSTEM

CONNECTIONS = 32
SECONDS = float(os.environ.get("HERON_BENCH_SECONDS", "10"))


def _load(url: str, headers: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", url, str(CONNECTIONS), str(SECONDS), *headers],
        capture_output=True,
        text=True,
        check=True,
        timeout=SECONDS + 60,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> None:
    data_dir = temp_dir("heron-bench-auth-")
    settings = Settings(data_dir=data_dir, admin_password="bench-password-123")  # type: ignore[arg-type]
    ctx = build_context(settings, prepare(settings, announce_password=False))
    with ctx.db.write() as session:
        root = groups.get_root(session)
        assert root is not None
        customer = groups.create(session, SYSTEM, parent_id=root.id, name="Customer")
        site = groups.create(session, SYSTEM, parent_id=customer.id, name="Site")
        _view, secret = api_users.create(
            session, SYSTEM, group_id=customer.id, name="bench", timezone="UTC", profile_ids=["OBSERVER"]
        )
        site_id = site.id

    # Authentication alone, in-process: the one indexed query plus the cached profile set.
    auth = ctx.authenticator
    for _ in range(200):
        auth.authenticate_secret(secret)
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        auth.authenticate_secret(secret)
    per_auth_ms = (time.perf_counter() - start) / n * 1000
    ctx.db.dispose()

    worker_counts = [int(w) for w in os.environ.get("HERON_BENCH_WORKERS", "1,2").split(",")]
    print(f"SQLite, {CONNECTIONS} concurrent keep-alive clients, {SECONDS:.0f} s per run;")
    print(f"load generator: one asyncio+uvloop process on the same {os.cpu_count()}-core machine")
    best = 0.0
    for workers in worker_counts:
        print(f" {workers} worker process(es):")
        with heron_server(data_dir, workers=workers) as base:
            _load(base + "/api/health", [])  # warm-up
            health = _load(base + "/api/health", [])
            group_read = _load(f"{base}/api/v2/groups/{site_id}", [f"authorization: {secret}"])
        for label, r in (("GET /api/health (no auth)", health), ("GET /api/v2/groups/{id} (auth)", group_read)):
            print(
                f"  {label}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                f"statuses {r['statuses']}, load generator CPU {r['loadgen_cpu_pct']:.0f}%"
            )
        rps = float(group_read["rps"])  # type: ignore[arg-type]
        print(f"  authenticated group read / health throughput: {rps / float(health['rps']):.2f}")  # type: ignore[arg-type]
        best = max(best, rps)
    target("best authenticated GET /api/v2/groups/{id}", best, 2000, "req/s", higher_is_better=True)
    target("authentication per request (in-process, one indexed query)", per_auth_ms, 0.2, "ms")
