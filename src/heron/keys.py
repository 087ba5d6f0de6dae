"""Key material: the key-encryption keyring (AES-GCM, key ids in every ciphertext) and the
session-signing secret. They are separate keys with separate files."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text

from heron.config import Settings
from heron.db.engine import Database

log = logging.getLogger("heron.keys")

_FORMAT = "v1"


class UndecryptableSecret(Exception):
    """A ciphertext names a key the keyring does not hold, or does not authenticate."""


def key_id(key: bytes) -> str:
    """A key's id is derived from the key itself, so keyrings need no naming scheme."""
    return hashlib.sha256(b"heron-kek-id" + key).hexdigest()[:8]


@dataclass
class Keyring:
    """AES-256-GCM keys by id; the last one encrypts, all of them decrypt."""

    keys: dict[str, bytes]
    current_id: str

    @classmethod
    def from_keys(cls, keys: list[bytes]) -> Keyring:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for k in keys:
            if len(k) != 32:
                raise ValueError("key-encryption keys are 32 bytes (base64 of 32 random bytes)")
        return cls({key_id(k): k for k in keys}, key_id(keys[-1]))

    @classmethod
    def parse(cls, text: str) -> Keyring:
        parts = [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]
        return cls.from_keys([base64.b64decode(p) for p in parts])

    def serialize(self) -> str:
        ordered = [k for kid, k in self.keys.items() if kid != self.current_id] + [self.keys[self.current_id]]
        return "\n".join(base64.b64encode(k).decode() for k in ordered) + "\n"

    def encrypt(self, plaintext: bytes, purpose: str) -> str:
        """Encrypt; `purpose` (e.g. "device.pac") is bound as associated data."""
        nonce = os.urandom(12)
        ct = AESGCM(self.keys[self.current_id]).encrypt(nonce, plaintext, purpose.encode())
        return f"{_FORMAT}:{self.current_id}:{base64.b64encode(nonce + ct).decode()}"

    def encrypter(self, purpose: str) -> Callable[[bytes], str]:
        """`encrypt` for many values under one purpose, building the cipher once (bulk jobs:
        building it is most of the cost of one call)."""
        aead, prefix, associated = AESGCM(self.keys[self.current_id]), f"{_FORMAT}:{self.current_id}:", purpose.encode()

        def encrypt(plaintext: bytes) -> str:
            nonce = os.urandom(12)
            return prefix + base64.b64encode(nonce + aead.encrypt(nonce, plaintext, associated)).decode()

        return encrypt

    def decrypt(self, token: str, purpose: str) -> bytes:
        try:
            fmt, kid, blob = token.split(":", 2)
        except ValueError as exc:
            raise UndecryptableSecret("not a Heron ciphertext") from exc
        if fmt != _FORMAT or kid not in self.keys:
            raise UndecryptableSecret(f"ciphertext under unknown key id {kid!r}")
        try:
            raw = base64.b64decode(blob, validate=True)
            return AESGCM(self.keys[kid]).decrypt(raw[:12], raw[12:], purpose.encode())
        except Exception as exc:
            raise UndecryptableSecret("ciphertext does not authenticate") from exc

    def key_id_of(self, token: str) -> str:
        return token.split(":", 2)[1]

    def with_new_key(self) -> tuple[Keyring, bytes]:
        new = secrets.token_bytes(32)
        keys = dict(self.keys)
        keys[key_id(new)] = new
        return Keyring(keys, key_id(new)), new


def _write_secret_file(path: Path, content: str) -> None:
    """Write a 0600 file atomically: a crash mid-write (say, during a rotation) leaves the old
    file whole, never an empty or partial key file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a leftover file
        with os.fdopen(fd, "w") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_keyring(settings: Settings, create: bool = True) -> Keyring:
    """The KEK from `HERON_KEK`, else from the key file (generated on first start for the
    embedded default, with a warning: production keeps the KEK outside the data directory)."""
    if settings.kek is not None:
        return Keyring.parse(settings.kek.get_secret_value())
    path = settings.resolved_kek_file
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"no key-encryption key at {path}")
        _write_secret_file(path, base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        log.warning(
            "generated a key-encryption key at %s; production should supply HERON_KEK "
            "(or HERON_KEK_FILE) from outside the data directory",
            path,
        )
    return Keyring.parse(path.read_text())


def save_keyring(settings: Settings, keyring: Keyring) -> None:
    _write_secret_file(settings.resolved_kek_file, keyring.serialize())


def load_session_secret(settings: Settings) -> bytes:
    path = settings.resolved_session_secret_file
    if not path.exists():
        _write_secret_file(path, secrets.token_hex(32) + "\n")
        log.warning("generated a session-signing secret at %s", path)
    return bytes.fromhex(path.read_text().strip())


@dataclass(frozen=True)
class EncryptedColumn:
    """A column that holds keyring ciphertexts; `heron keys rotate` re-encrypts each one."""

    table: str
    pk: str
    column: str
    purpose: str


ENCRYPTED_COLUMNS: list[EncryptedColumn] = []


def register_encrypted_column(table: str, pk: str, column: str, purpose: str) -> None:
    ENCRYPTED_COLUMNS.append(EncryptedColumn(table, pk, column, purpose))


def rotate_all(settings: Settings, db: Database, keyring: Keyring, new_kek: str | None = None) -> tuple[int, str]:
    """Re-encrypt every registered column under a new key. The keyring file first holds old and
    new keys (a crash mid-way loses nothing), then only the new one."""
    if new_kek is not None:
        new_key = base64.b64decode(new_kek)
        both = Keyring.from_keys([*keyring.keys.values(), new_key])
    elif settings.kek is not None:
        raise ValueError("HERON_KEK is set: pass --new-kek with the new key")
    else:
        both, new_key = keyring.with_new_key()
    if settings.kek is None:
        save_keyring(settings, both)
    count = 0
    with db.write() as session:
        for col in ENCRYPTED_COLUMNS:
            rows = session.execute(
                text(f"SELECT {col.pk}, {col.column} FROM {col.table} WHERE {col.column} IS NOT NULL")
            ).all()
            updates = [
                {"pk": pk, "v": both.encrypt(both.decrypt(value, col.purpose), col.purpose)} for pk, value in rows
            ]
            if updates:
                session.execute(text(f"UPDATE {col.table} SET {col.column} = :v WHERE {col.pk} = :pk"), updates)
            count += len(updates)
    final = Keyring.from_keys([new_key])
    if settings.kek is None:
        save_keyring(settings, final)
    return count, final.current_id
