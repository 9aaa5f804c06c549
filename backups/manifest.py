"""The backup manifest: what a backup holds, and the MAC that makes tampering detectable.

`manifest.json` is readable without keys (`backup list` shows it), and holds no secret:
the data key appears only wrapped. Its `mac` is an HMAC-SHA256 (key derived from the
backup's data key) over the canonical JSON of every other field, so changing any field, a
checksum or a row count included, is detected once the data key is unwrapped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orbisctl.core.errors import DataError

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "orbis-backup"
FORMAT_VERSION = 1

COMPONENT_DATABASE = "database"
COMPONENT_REDIS = "redis"
COMPONENT_CONFIG = "config"
COMPONENT_FILES = {
    COMPONENT_DATABASE: "database.pgdump.enc",
    COMPONENT_REDIS: "redis.rdb.enc",
    COMPONENT_CONFIG: "config.tar.enc",
}


@dataclass(frozen=True)
class Component:
    file: str
    size: int  # bytes stored (encrypted)
    sha256: str  # of the stored bytes: checkable without any key
    plain_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "size": self.size,
            "sha256": self.sha256,
            "plain_size": self.plain_size,
        }


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    created_at: datetime
    app_version: str
    schema_version: int | None
    postgres_version: str
    database: str
    components: dict[str, Component]
    row_counts: dict[str, int]
    key_wraps: list[dict[str, Any]]
    label: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def key_ids(self) -> list[str]:
        return [wrap["kid"] for wrap in self.key_wraps if wrap.get("type") == "keyring"]

    @property
    def has_escrow(self) -> bool:
        return any(wrap.get("type") == "escrow" for wrap in self.key_wraps)

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "id": self.backup_id,
            "label": self.label,
            "created_at": self.created_at.isoformat(),
            "app_version": self.app_version,
            "schema_version": self.schema_version,
            "postgres_version": self.postgres_version,
            "database": self.database,
            "components": {name: comp.to_json() for name, comp in self.components.items()},
            "row_counts": self.row_counts,
            "encryption": {
                "cipher": "AES-256-GCM, 1 MiB chunks, HKDF-SHA256 per-stream keys",
                "key_wraps": self.key_wraps,
            },
        }


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def render(manifest: Manifest, mac: str) -> bytes:
    return (json.dumps({**manifest.body(), "mac": mac}, indent=2, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    body_bytes: bytes  # canonical bytes the MAC covers
    mac: str


def _refuse(backup: str, problem: str) -> DataError:
    return DataError(
        f"backup {backup}: {problem}",
        hint="pick another backup (`orbisctl backup list`)",
    )


def load(path: Path) -> LoadedManifest:
    """Read, parse and version-check a backup directory's manifest (see `parse`)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise _refuse(
            path.parent.name, "manifest.json is missing (incomplete or not a backup)"
        ) from None
    except OSError as exc:
        raise _refuse(
            path.parent.name, f"manifest.json is unreadable ({exc.__class__.__name__})"
        ) from None
    return parse(text, path.parent.name)


def parse(text: bytes, backup: str) -> LoadedManifest:
    """Parse and version-check a manifest (`backup` names it in errors); its MAC is checked
    later, with the data key."""
    try:
        data = json.loads(text.decode("utf-8"))
    except ValueError as exc:
        raise _refuse(backup, f"manifest.json is unreadable ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise _refuse(backup, "manifest.json is not an OrbisVoice backup manifest")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise _refuse(backup, "manifest.json has no format version")
    if version > FORMAT_VERSION:
        raise DataError(
            f"backup {backup} has format version {version}, newer than this "
            f"orbisctl reads ({FORMAT_VERSION})",
            hint="upgrade orbisctl, then restore",
        )
    mac = data.pop("mac", None)
    try:
        components = {
            name: Component(
                file=str(comp["file"]),
                size=int(comp["size"]),
                sha256=str(comp["sha256"]),
                plain_size=int(comp["plain_size"]),
            )
            for name, comp in data["components"].items()
        }
        schema = data["schema_version"]
        manifest = Manifest(
            backup_id=str(data["id"]),
            label=str(data.get("label", "")),
            created_at=datetime.fromisoformat(data["created_at"]),
            app_version=str(data["app_version"]),
            schema_version=None if schema is None else int(schema),
            postgres_version=str(data["postgres_version"]),
            database=str(data["database"]),
            components=components,
            row_counts={str(k): int(v) for k, v in data["row_counts"].items()},
            key_wraps=list(data["encryption"]["key_wraps"]),
            format_version=version,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _refuse(backup, "manifest.json is malformed") from None
    if not isinstance(mac, str):
        raise _refuse(backup, "manifest.json has no MAC")
    if manifest.body() != data:
        raise _refuse(backup, "manifest.json has unexpected fields (tampered?)")
    return LoadedManifest(manifest, canonical(data), mac)
