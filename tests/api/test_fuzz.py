"""Schema-driven fuzzing: schemathesis generates requests for every operation of the app's own
`/api/openapi.json`, valid ones (positive) and ones that break the document (negative), sent as
an authenticated root ADMIN; no answer may be a server error (the `not_a_server_error` check).

The run in the suite is bounded (HERON_FUZZ_EXAMPLES per operation and mode, from a fixed seed,
HERON_FUZZ_SEED, so a failure reproduces); `make fuzz` runs more examples on both databases."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.conftest import Tenants

EXAMPLES = int(os.environ.get("HERON_FUZZ_EXAMPLES", "10"))
DATABASES = os.environ.get("HERON_FUZZ_DATABASES", "sqlite").split(",")
SEED = int(os.environ.get("HERON_FUZZ_SEED", "13"))
NEGATIVE_EVERYWHERE = os.environ.get("HERON_FUZZ_NEGATIVE", "bodies") == "all"
BASE = "http://testserver"


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A request in schemathesis' transport form (requests' arguments) as the test client takes it."""
    out = {k: kwargs[k] for k in ("method", "url", "headers", "params", "cookies", "json", "files") if kwargs.get(k)}
    data = kwargs.get("data")
    if isinstance(data, str | bytes):
        out["content"] = data
    elif data is not None:
        out["data"] = data
    return out


def test_no_operation_answers_a_server_error(
    client: TestClient, tenants: Tenants, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params.get("database_url") not in DATABASES:
        pytest.skip(f"fuzzing runs on {DATABASES} (HERON_FUZZ_DATABASES)")
    doc = client.get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    auth = tenants.root_admin.headers
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    sent = 0

    def send(case: schemathesis.Case) -> None:
        nonlocal sent
        sent += 1
        kwargs = case.as_transport_kwargs(base_url=BASE, headers=auth)
        try:
            response = client.request(**_httpx_kwargs(kwargs))
        except Exception as exc:  # the test client re-raises what the app let through: a 500
            failures.append(f"{type(exc).__name__}: {exc}\n  {case.as_curl_command(headers=auth)}")
            return
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except AssertionError as exc:
            failures.append(f"{str(exc).strip()[:500]}\n  {case.as_curl_command(headers=auth)}")

    started = time.monotonic()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        modes = [GenerationMode.POSITIVE]
        if operation.body or NEGATIVE_EVERYWHERE:
            # Negating path and query parameters (strings in a URL) costs schemathesis ~0.5 s of
            # generation per operation: bodies in the suite's run, everything in `make fuzz`.
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode, headers=auth)

            @settings(
                max_examples=EXAMPLES,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @seed(SEED)
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                send(case)

            try:
                run()
            except Unsatisfiable:  # nothing of this operation can be made invalid (no parameter)
                assert mode is GenerationMode.NEGATIVE, operation.label
    elapsed = time.monotonic() - started
    print(f"fuzzed {operations} operations with {sent} requests in {elapsed:.0f} s: {sorted(statuses.items())}")
    assert operations > 100 and sent >= operations
    # The credential lived through the run (a fuzzed DELETE or renewal of it would blind the rest).
    assert statuses[401] < sent / 10, statuses
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures[:30])
