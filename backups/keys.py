"""The backup key ring and the passphrase escrow, read from and written to `secrets/`.

- `secrets/backup_key`: the current key (32 random bytes, base64url); new backups use it.
- `secrets/backup_keys.json`: older keys kept so older backups still restore
  (`{"keys": [{"kid", "key", "created_at", "retired_at"}]}`); key rotation appends to it.
- `secrets/backup_escrow.json`: the passphrase escrow's public half (no secret in it, but it
  lives with the secrets so it moves with them).

A key's `kid` is a fingerprint of the key itself (`crypto.key_id`), so ring entries cannot
name the wrong key.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backups import crypto
from backups.fs import atomic_write
from orbisctl.core import secretfiles
from orbisctl.core.errors import DataError

BACKUP_KEY_FILE = secretfiles.BACKUP_KEY
BACKUP_KEY_RING_FILE = "backup_keys.json"
ESCROW_FILE = "backup_escrow.json"
SECRET_MODE = 0o600


@dataclass(frozen=True)
class BackupKeyRing:
    current: bytes | None
    older: tuple[bytes, ...] = ()

    @property
    def current_kid(self) -> str | None:
        return crypto.key_id(self.current) if self.current else None

    def find(self, kid: str) -> bytes | None:
        for key in (self.current, *self.older):
            if key is not None and crypto.key_id(key) == kid:
                return key
        return None

    def __repr__(self) -> str:  # never show key material
        older = [crypto.key_id(key) for key in self.older]
        return f"BackupKeyRing(current={self.current_kid!r}, older={older!r})"


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = crypto.b64d(text.strip())
    except (binascii.Error, ValueError):
        raise DataError(
            f"{where} is not base64url", hint="restore the file from a backup"
        ) from None
    if len(key) != crypto.KEY_BYTES:
        raise DataError(
            f"{where} holds {len(key)} bytes, not {crypto.KEY_BYTES}",
            hint="restore the file from a backup",
        )
    return key


def load_key_ring(secrets_dir: Path) -> BackupKeyRing:
    """The ring from `secrets/`; an empty ring when the host has no backup keys (a new host)."""
    current_file = secrets_dir / BACKUP_KEY_FILE
    current = (
        _decode_key(current_file.read_text(), str(current_file)) if current_file.exists() else None
    )
    older: list[bytes] = []
    ring_file = secrets_dir / BACKUP_KEY_RING_FILE
    if ring_file.exists():
        try:
            entries = json.loads(ring_file.read_text())["keys"]
            older = [
                _decode_key(entry["key"], f"{ring_file} key {index}")
                for index, entry in enumerate(entries)
            ]
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{ring_file} is not a backup key ring", hint="restore the file from a backup"
            ) from None
    return BackupKeyRing(current, tuple(key for key in older if key != current))


def generate_backup_key(secrets_dir: Path) -> bytes:
    """Write a new current key when there is none (never overwrites one)."""
    path = secrets_dir / BACKUP_KEY_FILE
    if path.exists():
        return _decode_key(path.read_text(), str(path))
    key = crypto.new_data_key()
    atomic_write(path, (crypto.b64e(key) + "\n").encode(), mode=SECRET_MODE)
    return key


def add_to_ring(secrets_dir: Path, key: bytes, *, now: datetime | None = None) -> None:
    """Keep `key` in `backup_keys.json` (key rotation calls this before replacing the key)."""
    ring_file = secrets_dir / BACKUP_KEY_RING_FILE
    entries: list[dict[str, Any]] = []
    if ring_file.exists():
        entries = json.loads(ring_file.read_text())["keys"]
    kid = crypto.key_id(key)
    if any(entry.get("kid") == kid for entry in entries):
        return
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries.append({"kid": kid, "key": crypto.b64e(key), "created_at": stamp})
    atomic_write(
        ring_file, (json.dumps({"keys": entries}, indent=2) + "\n").encode(), mode=SECRET_MODE
    )


def load_escrow(secrets_dir: Path) -> crypto.EscrowParams | None:
    path = secrets_dir / ESCROW_FILE
    if not path.exists():
        return None
    try:
        return crypto.EscrowParams.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, crypto.CryptoError):
        raise DataError(
            f"{path} is not a passphrase escrow",
            hint="set it again with `orbisctl backup escrow`",
        ) from None


def save_escrow(secrets_dir: Path, passphrase: str) -> crypto.EscrowParams:
    escrow = crypto.escrow_from_passphrase(passphrase)
    atomic_write(
        secrets_dir / ESCROW_FILE,
        (json.dumps(escrow.to_json(), indent=2) + "\n").encode(),
        mode=SECRET_MODE,
    )
    return escrow
