"""Message retention per contract, on both databases: older messages go with their receptions,
newer ones stay, and the device shows when a purge last removed some."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from heron.db.engine import Database
from heron.messages.models import Message, Reception
from heron.messages.retention import purge_messages
from heron.registry.models import Contract
from tests.conftest import Tenants
from tests.network.sigfox.test_ingest import Clock, Radio, clock, frame, radio, send

__all__ = ["clock", "radio"]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_messages_older_than_the_contracts_retention_are_purged(
    client: TestClient, db: Database, tenants: Tenants, radio: Radio, clock: Clock
) -> None:
    with db.read() as s:
        contract_id = s.scalar(select(Contract.id).where(Contract.name == "Plan"))
    r = client.put(
        f"/api/v2/contracts/{contract_id}", json={"messageRetentionDays": 2}, headers=tenants.root_admin.headers
    )
    assert r.status_code == 204, r.text
    shown = client.get(f"/api/v2/contracts/{contract_id}", headers=tenants.root_admin.headers).json()
    assert shown["messageRetentionDays"] == 2
    start = clock.now
    for day, seq in ((0, 1), (1, 2), (3, 3)):
        clock.now = start + timedelta(days=day)
        send(client, radio.stations[0], frame(seq=seq), frame(device="1002", seq=seq))
    with db.write() as s:
        assert purge_messages(s, start + timedelta(days=3, hours=12), limit=1) == 1  # batches
    with db.write() as s:
        assert purge_messages(s, start + timedelta(days=3, hours=12)) == 3
    with db.write() as s:
        assert purge_messages(s, start + timedelta(days=3, hours=12)) == 0
    with db.read() as s:
        kept = sorted(s.scalars(select(Message.seq_number)))
        assert kept == [3, 3]
        assert s.scalar(select(func.count()).select_from(Reception)) == 2
    device = client.get("/api/v2/devices/1001", headers=tenants.a_admin.headers).json()
    assert device["lastMessagePurge"] == int((start + timedelta(days=3, hours=12)).timestamp() * 1000)
    bad = client.put(
        f"/api/v2/contracts/{contract_id}", json={"messageRetentionDays": 0}, headers=tenants.root_admin.headers
    )
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "messageRetentionDays"
