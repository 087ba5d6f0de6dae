"""The key-encryption keyring (AES-256-GCM, key id in every ciphertext, purpose bound as associated
data), key rotation over every registered encrypted column, and the key files of a first start."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from heron import keys
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.engine import Database
from heron.keys import Keyring, UndecryptableSecret, key_id, load_keyring, register_encrypted_column, rotate_all
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

CLI_TIMEOUT = 60
HERON = Path(sys.executable).with_name("heron")
_tables = itertools.count()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the keyring ------------------------------------------------------------------------------


def test_encrypt_then_decrypt_round_trips_and_names_the_current_key() -> None:
    key = secrets.token_bytes(32)
    ring = Keyring.from_keys([key])
    token = ring.encrypt(b"root key 0123456789abcdef", "device.pac")
    fmt, kid, blob = token.split(":", 2)
    assert (fmt, kid) == ("v1", key_id(key))
    assert ring.key_id_of(token) == ring.current_id == key_id(key)
    assert b"root key" not in base64.b64decode(blob)
    assert ring.decrypt(token, "device.pac") == b"root key 0123456789abcdef"
    # A fresh nonce per encryption: the same plaintext never gives the same ciphertext.
    assert ring.encrypt(b"root key 0123456789abcdef", "device.pac") != token


def test_the_last_key_encrypts_and_every_key_of_the_ring_decrypts() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    under_old = Keyring.from_keys([old]).encrypt(b"older secret", "callback.secret")
    ring = Keyring.from_keys([old, new])
    under_new = ring.encrypt(b"newer secret", "callback.secret")
    assert ring.key_id_of(under_old) == key_id(old)
    assert ring.key_id_of(under_new) == key_id(new) == ring.current_id
    assert ring.decrypt(under_old, "callback.secret") == b"older secret"
    assert ring.decrypt(under_new, "callback.secret") == b"newer secret"
    # The serialized ring keeps the current key last, so parsing it gives the same ring back.
    assert Keyring.parse(ring.serialize()) == ring
    with pytest.raises(UndecryptableSecret, match="unknown key id"):
        Keyring.from_keys([old]).decrypt(under_new, "callback.secret")


def test_decrypting_for_another_purpose_is_refused() -> None:
    ring = Keyring.from_keys([secrets.token_bytes(32)])
    token = ring.encrypt(b"a device's PAC", "device.pac")
    with pytest.raises(UndecryptableSecret, match="does not authenticate"):
        ring.decrypt(token, "callback.secret")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda b: bytes([b[0] ^ 1]) + b[1:], id="nonce"),
        pytest.param(lambda b: b[:20] + bytes([b[20] ^ 0x80]) + b[21:], id="ciphertext"),
        pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="tag"),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b[:8], id="shorter-than-a-nonce"),
    ],
)
def test_tampered_ciphertext_is_refused(tamper: Callable[[bytes], bytes]) -> None:
    ring = Keyring.from_keys([secrets.token_bytes(32)])
    fmt, kid, blob = ring.encrypt(b"secret", "device.pac").split(":", 2)
    tampered = base64.b64encode(tamper(base64.b64decode(blob))).decode()
    with pytest.raises(UndecryptableSecret):
        ring.decrypt(f"{fmt}:{kid}:{tampered}", "device.pac")


@pytest.mark.parametrize(
    "token",
    ["", "plaintext", "v1:deadbeef", "v2:{kid}:AAAA", "v1:00000000:AAAA", "v1:{kid}:not base64!", "v1:{kid}:"],
)
def test_malformed_tokens_are_refused_as_undecryptable(token: str) -> None:
    ring = Keyring.from_keys([secrets.token_bytes(32)])
    with pytest.raises(UndecryptableSecret):
        ring.decrypt(token.format(kid=ring.current_id), "device.pac")


def test_keys_that_are_not_32_bytes_are_rejected() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring.from_keys([secrets.token_bytes(16)])
    with pytest.raises(ValueError):
        Keyring.from_keys([])


# -- rotation ---------------------------------------------------------------------------------


@pytest.fixture
def registered() -> Iterator[None]:
    """Leave keys.ENCRYPTED_COLUMNS as it was, whatever the test registers."""
    saved = list(keys.ENCRYPTED_COLUMNS)
    try:
        yield
    finally:
        keys.ENCRYPTED_COLUMNS[:] = saved


@pytest.fixture
def file_settings(tmp_path: Path, database_url: str) -> Settings:
    """The embedded default's key handling: no HERON_KEK, the KEK in <data_dir>/keys/kek."""
    return Settings(
        data_dir=tmp_path / "file-keys",
        database_url=database_url,
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,  # type: ignore[arg-type]
        access_log=False,
    )


def _other_secrets(db: Database) -> int:
    """Ciphertexts in columns registered by Heron itself (not by the test)."""
    with db.read() as session:
        return sum(
            int(session.scalar(text(f"SELECT count(*) FROM {c.table} WHERE {c.column} IS NOT NULL")) or 0)
            for c in keys.ENCRYPTED_COLUMNS
        )


def _probe_table(db: Database, ring: Keyring, rows: int) -> tuple[str, dict[int, tuple[bytes | None, bytes]]]:
    """A throwaway table with two encrypted columns under different purposes, filled under `ring`;
    some values of the first column are NULL (and must stay NULL)."""
    table = f"rotate_probe_{os.getpid()}_{next(_tables)}"
    plain: dict[int, tuple[bytes | None, bytes]] = {
        i: (None if i % 5 == 0 else secrets.token_bytes(16), f"callback secret {i}".encode())
        for i in range(1, rows + 1)
    }
    with db.write() as session:
        session.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, pac TEXT NULL, cb TEXT NOT NULL)"))
        session.execute(
            text(f"INSERT INTO {table} (id, pac, cb) VALUES (:id, :pac, :cb)"),
            [
                {
                    "id": i,
                    "pac": None if pac is None else ring.encrypt(pac, "probe.pac"),
                    "cb": ring.encrypt(cb, "probe.callback"),
                }
                for i, (pac, cb) in plain.items()
            ],
        )
    return table, plain


def test_rotate_reencrypts_every_registered_column_under_a_new_key_and_drops_the_old_one(
    file_settings: Settings, registered: None
) -> None:
    prepared = prepare(file_settings, announce_password=False)
    db, old_ring = prepared.db, prepared.keyring
    try:
        kek_file = file_settings.resolved_kek_file
        assert load_keyring(file_settings, create=False) == old_ring
        baseline = _other_secrets(db)
        table, plain = _probe_table(db, old_ring, rows=40)
        register_encrypted_column(table, "id", "pac", "probe.pac")
        register_encrypted_column(table, "id", "cb", "probe.callback")
        expected = sum(1 for pac, _cb in plain.values() if pac is not None) + len(plain)

        count, new_id = rotate_all(file_settings, db, old_ring)

        assert count == expected + baseline
        assert new_id != old_ring.current_id
        on_file = load_keyring(file_settings, create=False)
        assert list(on_file.keys) == [new_id] == [on_file.current_id]  # the old key is gone
        assert all(base64.b64encode(k).decode() not in kek_file.read_text() for k in old_ring.keys.values())
        assert _mode(kek_file) == 0o600
        assert _mode(kek_file.parent) == 0o700
        assert sorted(p.name for p in kek_file.parent.iterdir()) == ["kek", "session"]  # no temporary file left

        with db.read() as session:
            stored = {r[0]: (r[1], r[2]) for r in session.execute(text(f"SELECT id, pac, cb FROM {table}"))}
        assert stored.keys() == plain.keys()
        for i, (pac_token, cb_token) in stored.items():
            pac, cb = plain[i]
            if pac is None:
                assert pac_token is None
            else:
                assert on_file.key_id_of(pac_token) == new_id
                assert on_file.decrypt(pac_token, "probe.pac") == pac
            assert on_file.key_id_of(cb_token) == new_id
            assert on_file.decrypt(cb_token, "probe.callback") == cb
            with pytest.raises(UndecryptableSecret):
                old_ring.decrypt(cb_token, "probe.callback")

        # Rotating again works from the new key: nothing depends on the old one any more.
        count2, newer_id = rotate_all(file_settings, db, on_file)
        assert count2 == count and newer_id not in (new_id, old_ring.current_id)
    finally:
        db.dispose()


def test_rotate_with_heron_kek_takes_the_new_key_from_the_operator_and_writes_no_file(
    settings: Settings, db: Database, registered: None
) -> None:
    assert settings.kek is not None
    ring = load_keyring(settings)
    baseline = _other_secrets(db)
    table, plain = _probe_table(db, ring, rows=5)
    register_encrypted_column(table, "id", "cb", "probe.callback")
    with pytest.raises(ValueError, match="--new-kek"):
        rotate_all(settings, db, ring)

    new_key = secrets.token_bytes(32)
    count, new_id = rotate_all(settings, db, ring, base64.b64encode(new_key).decode())
    assert (count, new_id) == (len(plain) + baseline, key_id(new_key))
    assert not settings.resolved_kek_file.exists()
    new_ring = Keyring.from_keys([new_key])
    with db.read() as session:
        for i, token in session.execute(text(f"SELECT id, cb FROM {table}")):
            assert new_ring.key_id_of(token) == new_id
            assert new_ring.decrypt(token, "probe.callback") == plain[i][1]


def test_a_key_file_with_loose_permissions_is_rewritten_0600_by_rotation(
    file_settings: Settings, registered: None
) -> None:
    prepared = prepare(file_settings, announce_password=False)
    try:
        kek_file = file_settings.resolved_kek_file
        kek_file.chmod(0o644)
        rotate_all(file_settings, prepared.db, prepared.keyring)
        assert _mode(kek_file) == 0o600
    finally:
        prepared.db.dispose()


def _heron(*args: str, settings: Settings, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERON_")}
    env.update(
        HERON_DATABASE_URL=settings.database_url,
        HERON_DATA_DIR=str(settings.data_dir),
        HERON_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **extra_env,
    )
    command = [str(HERON)] if HERON.exists() else [sys.executable, "-m", "heron.cli"]
    return subprocess.run(
        [*command, *args], env=env, cwd=settings.data_dir.parent, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )


def test_heron_keys_rotate_replaces_the_key_file_and_reports_the_new_key_id(file_settings: Settings) -> None:
    prepare(file_settings, announce_password=False).db.dispose()
    kek_file = file_settings.resolved_kek_file
    before = kek_file.read_text()

    result = _heron("keys", "rotate", settings=file_settings)
    assert result.returncode == 0, result.stderr
    ring = Keyring.parse(kek_file.read_text())
    assert f"under key {ring.current_id}" in result.stderr
    assert list(ring.keys) == [ring.current_id] and kek_file.read_text() != before
    assert _mode(kek_file) == 0o600

    refused = _heron("keys", "rotate", settings=file_settings, HERON_KEK=base64.b64encode(bytes(32)).decode())
    assert refused.returncode != 0
    assert "error:" in refused.stderr and "--new-kek" in refused.stderr
    assert "Traceback" not in refused.stderr


# -- first start ------------------------------------------------------------------------------


def test_first_start_generates_kek_and_session_files_0600_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        admin_email=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,  # type: ignore[arg-type]
        access_log=False,
    )
    caplog.set_level(logging.WARNING, logger="heron.keys")
    prepared = prepare(settings, announce_password=False)
    prepared.db.dispose()

    kek, session = tmp_path / "var" / "keys" / "kek", tmp_path / "var" / "keys" / "session"
    assert (_mode(kek), _mode(session), _mode(kek.parent)) == (0o600, 0o600, 0o700)
    assert (tmp_path / "var" / "heron.db").is_file()
    assert prepared.keyring == Keyring.parse(kek.read_text())
    assert prepared.session_secret == bytes.fromhex(session.read_text().strip())
    assert len(prepared.session_secret) == 32
    assert prepared.session_secret not in prepared.keyring.keys.values()  # separate keys
    warnings = [r.getMessage() for r in caplog.records if r.name == "heron.keys" and r.levelno == logging.WARNING]
    assert any(str(kek) in w and "HERON_KEK" in w for w in warnings), warnings
    assert any(str(session) in w for w in warnings), warnings

    # The next start reads the same keys back and warns no more.
    caplog.clear()
    again = prepare(settings, announce_password=False)
    again.db.dispose()
    assert again.keyring == prepared.keyring and again.session_secret == prepared.session_secret
    assert not [r for r in caplog.records if r.name == "heron.keys"]
