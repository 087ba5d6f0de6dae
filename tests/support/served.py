"""A real HTTP server for tests that need one event loop as in production (TestClient runs each
request in a thread of its own), and the Sigfox device type (on a contract of its own) that
tests register their devices into."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from sqlalchemy.orm import Session

from heron.api.app import create_app
from heron.config import Settings
from heron.db.engine import Database
from heron.registry import contracts, device_types
from heron.registry.device_types import DeviceTypeView
from heron.runtime.context import AppContext
from heron.tenancy.access import SYSTEM


@contextmanager
def uvicorn_in_thread(settings: Settings, ctx: AppContext) -> Iterator[int]:
    """The app on the test database, served by uvicorn on a free loopback port in a thread:
    yields the port."""
    config = uvicorn.Config(create_app(settings, ctx), host="127.0.0.1", port=0, log_config=None, access_log=False)
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not served.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield served.servers[0].sockets[0].getsockname()[1]
    finally:
        served.should_exit = True
        thread.join(timeout=30)


def sigfox_type(s: Session, group_id: int, name: str, max_tokens: int) -> DeviceTypeView:
    """In session `s`: a Sigfox device type of `group_id` on a contract of its own ("Plan")."""
    contract = contracts.create(s, SYSTEM, group_id=group_id, name="Plan", max_tokens=max_tokens)
    return device_types.create(
        s,
        SYSTEM,
        group_id=group_id,
        network="SIGFOX",
        fields=device_types.DeviceTypeFields(name=name, contract_id=contract.contract.id),
    )


def sigfox_device_type(db: Database, group_id: int, name: str, max_tokens: int) -> str:
    """`sigfox_type` in a transaction of its own: its id."""
    with db.write() as s:
        return str(sigfox_type(s, group_id, name, max_tokens).device_type.id)
