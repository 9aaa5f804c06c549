"""Verify a backup without changing anything that serves: sizes and checksums, the data key
(key ring or escrow passphrase), the manifest's MAC, every component decrypted, and with
`deep` a restore into a throwaway database whose row counts must match the manifest.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from backups import crypto, manifest
from backups.databases import count_mismatches, drop_database, row_counts
from backups.executor import MAINTENANCE_DATABASE, Executor
from backups.keys import BackupKeyRing
from backups.manifest import (
    COMPONENT_CONFIG,
    COMPONENT_DATABASE,
    COMPONENT_REDIS,
    Component,
    Manifest,
)
from backups.ports import (
    STEP_CHECK_ROWS,
    STEP_RESTORE_DATABASE,
    STEP_VERIFY,
)
from backups.process import psql_session, quote_ident, stream_in
from orbisctl.core.errors import DataError
from orbisctl.core.progress import NO_PROGRESS, Progress

_READ_CHUNK = 1024 * 1024


@dataclass
class Verified:
    """A backup whose manifest, checksums and encryption all checked out."""

    path: Path
    manifest: Manifest
    data_key: bytes = field(repr=False)
    opened_with: str  # "key bk-…" or "passphrase"
    archive_entries: int = 0
    deep_row_counts: dict[str, int] | None = None


def refuse(path: Path, problem: str, hint: str | None = None) -> DataError:
    return DataError(
        f"backup {path.name}: {problem}",
        hint=hint or "this backup cannot be trusted; pick another (`orbisctl backup list`)",
    )


def _check_files(path: Path, loaded: Manifest, progress: Progress) -> None:
    for name in (COMPONENT_DATABASE, COMPONENT_REDIS, COMPONENT_CONFIG):
        component = loaded.components.get(name)
        if component is None:
            raise refuse(path, f"the manifest lists no {name} component")
        file = path / component.file
        if not file.is_file():
            raise refuse(path, f"component {name} is missing ({component.file})")
        size = file.stat().st_size
        if size < component.size:
            raise refuse(path, f"component {name} is truncated ({size} of {component.size} bytes)")
        if size > component.size:
            raise refuse(path, f"component {name} has {size - component.size} extra bytes")
        progress.step(f"checksum {name}", size)
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while piece := handle.read(_READ_CHUNK):
                digest.update(piece)
                progress.advance(len(piece))
        if digest.hexdigest() != component.sha256:
            raise refuse(path, f"component {name} fails its SHA-256 checksum (corrupted)")


def _unwrap(
    path: Path, loaded: Manifest, ring: BackupKeyRing, passphrase: str | None
) -> tuple[bytes, str]:
    """The data key: from the key ring, or from the escrow with `passphrase`.

    A passphrase given is always checked, even when the ring opens the backup: an operator
    who passes a wrong one (or one for another escrow) must hear it now, not on the day the
    host has lost its key and the passphrase is all that is left.
    """
    escrow_wraps = [wrap for wrap in loaded.key_wraps if wrap.get("type") == "escrow"]
    if passphrase is not None:
        if not escrow_wraps:
            raise refuse(
                path,
                "it has no passphrase escrow, so the passphrase given cannot be checked",
                hint="restore it with its key, without --passphrase-file",
            )
        try:
            return crypto.unwrap_with_passphrase(escrow_wraps[0], passphrase), "passphrase"
        except crypto.CryptoError:
            raise refuse(
                path, "the passphrase is wrong", hint="check the passphrase and try again"
            ) from None
    for wrap in loaded.key_wraps:
        if wrap.get("type") != "keyring":
            continue
        key = ring.find(str(wrap.get("kid")))
        if key is None:
            continue
        try:
            return crypto.unwrap_with_key(wrap, key), f"key {wrap['kid']}"
        except crypto.CryptoError as exc:
            raise refuse(path, str(exc)) from None
    made_with = ", ".join(loaded.key_ids) or "no key"
    here = ring.current_kid or "no backup key"
    hint = "copy secrets/backup_key or backup_keys.json from the old host"
    if escrow_wraps:
        hint += ", or give the escrow passphrase with --passphrase-file"
    raise refuse(path, f"it was made with {made_with}, and this host has {here}", hint=hint)


def decrypted(
    path: Path, component: Component, data_key: bytes, name: str, progress: Progress
) -> Iterator[bytes]:
    with (path / component.file).open("rb") as handle:
        try:
            for piece in crypto.decrypt_stream(handle, data_key, name):
                progress.advance(len(piece))
                yield piece
        except crypto.CryptoError as exc:
            raise refuse(path, str(exc)) from None


def open_without_dump(
    path: Path, ring: BackupKeyRing, passphrase: str | None, progress: Progress
) -> Verified:
    """Everything but the dump's chunks: sizes and SHA-256 (no key needed), the data key
    (key ring or passphrase), the manifest MAC, and the small components decrypted."""
    progress.step(STEP_VERIFY)
    loaded = manifest.load(path / manifest.MANIFEST_FILE)
    info = loaded.manifest
    _check_files(path, info, progress)
    data_key, opened_with = _unwrap(path, info, ring, passphrase)
    if not crypto.manifest_mac_ok(data_key, loaded.body_bytes, loaded.mac):
        raise refuse(path, "manifest.json fails authentication (tampered)")
    for name in (COMPONENT_REDIS, COMPONENT_CONFIG):
        component = info.components[name]
        progress.step(f"decrypt {name}", component.plain_size)
        for _ in decrypted(path, component, data_key, name, progress):
            pass
    return Verified(path, info, data_key, opened_with)


def open_backup(
    path: Path,
    ring: BackupKeyRing,
    *,
    passphrase: str | None = None,
    executor: Executor | None = None,
    progress: Progress = NO_PROGRESS,
) -> Verified:
    """Check everything that can be checked without a database server being changed.

    `open_without_dump`'s checks, every chunk of the dump authenticated, and (when an executor is
    given) `pg_restore --list` reading the dump's table of contents.
    """
    result = open_without_dump(path, ring, passphrase, progress)
    database = result.manifest.components[COMPONENT_DATABASE]
    progress.step(f"decrypt {COMPONENT_DATABASE}", database.plain_size)
    pieces = decrypted(path, database, result.data_key, COMPONENT_DATABASE, progress)
    if executor is None:
        for _ in pieces:
            pass
    else:
        listing = stream_in(
            executor.postgres("pg_restore", ["--list"], dbname=MAINTENANCE_DATABASE),
            pieces,
            what="pg_restore --list",
            reads_all=False,
        )
        result.archive_entries = sum(
            1
            for line in listing.decode(errors="replace").splitlines()
            if line and not line.startswith(";")
        )
    return result


def restore_database(
    verified: Verified, executor: Executor, dbname: str, progress: Progress
) -> None:
    database = verified.manifest.components[COMPONENT_DATABASE]
    progress.step(STEP_RESTORE_DATABASE, database.plain_size)
    pieces = decrypted(verified.path, database, verified.data_key, COMPONENT_DATABASE, progress)
    stream_in(
        executor.postgres("pg_restore", ["--exit-on-error", "--no-password"], dbname=dbname),
        pieces,
        what="pg_restore",
    )


def verify_backup(
    path: Path,
    ring: BackupKeyRing,
    executor: Executor,
    *,
    passphrase: str | None = None,
    deep: bool = False,
    progress: Progress = NO_PROGRESS,
) -> Verified:
    """`open_backup`, and with `deep` a restore into a throwaway database + row counts."""
    verified = open_backup(path, ring, passphrase=passphrase, executor=executor, progress=progress)
    if deep:
        scratch = f"{verified.manifest.database}_verify_{secrets.token_hex(4)}"
        with psql_session(executor, MAINTENANCE_DATABASE) as session:
            session.query(f"CREATE DATABASE {quote_ident(scratch)}")
        try:
            restore_database(verified, executor, scratch, progress)
            progress.step(STEP_CHECK_ROWS)
            verified.deep_row_counts = row_counts(executor, scratch)
        finally:
            drop_database(executor, scratch)
        problems = count_mismatches(verified.manifest.row_counts, verified.deep_row_counts)
        if problems:
            raise refuse(
                path, "restored row counts differ from the manifest: " + "; ".join(problems)
            )
    return verified
