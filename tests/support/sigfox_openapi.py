"""Where Sigfox's OpenAPI document is: `HERON_SIGFOX_OPENAPI`, else `shared/reference/` beside the
checkout (or beside any folder above it, as CI lays a clone out). Tests that need it skip
without it, unless `HERON_REQUIRE_ALL=1` makes that a failure."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest

RELATIVE = Path("shared") / "reference" / "sigfox-api-v2.openapi.json"


def _find() -> Path | None:
    if os.environ.get("HERON_SIGFOX_OPENAPI"):
        return Path(os.environ["HERON_SIGFOX_OPENAPI"])
    for folder in Path(__file__).resolve().parents:
        if (folder / RELATIVE).is_file():
            return folder / RELATIVE
    return None


def spec_path() -> Path:
    """The document's path; skips (or fails under HERON_REQUIRE_ALL=1) when it is nowhere."""
    found = _find()
    if found is None or not found.is_file():
        if os.environ.get("HERON_REQUIRE_ALL") == "1":
            raise FileNotFoundError(f"Sigfox's OpenAPI document: set HERON_SIGFOX_OPENAPI or lay out {RELATIVE}")
        pytest.skip(f"Sigfox's OpenAPI document is not found ({RELATIVE} above the checkout; HERON_SIGFOX_OPENAPI)")
    return found


@cache
def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def spec() -> dict[str, Any]:
    return _load(spec_path())
