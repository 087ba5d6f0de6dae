"""A dead callback's probes follow the delivery backoff settings (at most a minute apart), on both
databases: an endpoint back from an outage is found, and its backlog drained, within the
configured backoff. Frames through the real ingest, a real receiver on 127.0.0.1, rounds driven
with an injected clock."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from heron.config import Settings
from heron.db.engine import Database
from heron.delivery.models import DONE, Delivery
from tests.conftest import Tenants
from tests.delivery.test_outbox import Receiver, clock, failing_callback, is_dead, receiver, rounds
from tests.network.sigfox.test_ingest import Clock, Radio, radio

__all__ = ["clock", "radio", "receiver"]  # fixtures, imported for this module's tests

BACKOFF_MAX = 2.0  # seconds: the cap of the backoff (base 0.25 s), well under the minute


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "callback_allow_cidrs": "127.0.0.0/8",
            "run_deliveries": False,
            "delivery_backoff_base_seconds": 0.25,
            "delivery_backoff_max_seconds": BACKOFF_MAX,
        }
    )


def test_a_dead_callback_drains_within_its_backoff_once_its_endpoint_recovers(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, receiver: Receiver, clock: Clock
) -> None:
    cb_id = failing_callback(client, tenants, radio, receiver, clock, status=500, frames=4)
    # The outage: retried at the backoff's pace until the callback is dead.
    for _ in range(50):
        rounds(client)
        if is_dead(db, cb_id):
            break
        clock.now += timedelta(seconds=BACKOFF_MAX * 1.1)
    assert is_dead(db, cb_id)
    # Dead, the pace stays the backoff's: another failed probe one capped backoff later.
    tried = len(receiver.requests)
    clock.now += timedelta(seconds=BACKOFF_MAX * 1.1)  # the cap, with its jitter
    assert rounds(client) == 1 and len(receiver.requests) == tried + 1
    assert is_dead(db, cb_id)
    # The endpoint recovers: within one capped backoff the probe goes, the backlog follows.
    receiver.status = 200
    clock.now += timedelta(seconds=BACKOFF_MAX * 1.1)
    assert rounds(client) == 1  # the probe
    assert not is_dead(db, cb_id)
    # The backlog, released at once: one per round (a device's order), no time passing.
    assert [rounds(client) for _ in range(4)] == [1, 1, 1, 0]
    delivered = [json.loads(r["body"])["seq"] for r in receiver.requests[-4:]]
    assert delivered == [1, 2, 3, 4]
    with db.read() as s:
        assert set(s.scalars(select(Delivery.state))) == {DONE}
