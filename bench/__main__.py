"""`python -m bench [name ...]`: run the benchmarks (all by default) and print their figures."""

from __future__ import annotations

import importlib
import sys
import time

BENCHES = ["bench.group_tree", "bench.http_auth", "bench.device_queries"]
BENCHES += ["bench.senet_onboarding", "bench.bulk_create", "bench.ingest"]
BENCHES += ["bench.delivery", "bench.geolocation", "bench.coverage", "bench.heavy_request"]


def main() -> None:
    names = [f"bench.{n}" for n in sys.argv[1:]] or BENCHES
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(name).main()
        print(f"({name} took {time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
