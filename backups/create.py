"""Create a backup in an install's backup repository.

A backup is one directory `<repository>/<id>/` holding `manifest.json` and one encrypted
file per component (see `manifest.COMPONENT_FILES`). It is built in `.partial-<id>/` and
renamed into place only once every byte and the manifest are on disk, so a backup that was
interrupted never looks complete (`list` ignores dot-directories); `backups.partials` tells
a killed backup's partial from one being written and removes it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from backups import crypto, manifest, restore_journal
from backups.databases import count_rows, table_list_sql
from backups.executor import Command, Executor
from backups.keys import BackupKeyRing, load_escrow
from backups.manifest import (
    COMPONENT_CONFIG,
    COMPONENT_DATABASE,
    COMPONENT_FILES,
    COMPONENT_REDIS,
    Component,
    Manifest,
)
from backups.partials import (
    PARTIAL_PREFIX,
    lock_writer,
    partials_lock,
    publish,
    stale_partials,
    sweep_partials,
)
from backups.process import psql_session, stream_out
from backups.rdb_tail import RdbTail
from backups.schema import database_schema_version
from orbisctl import __version__
from orbisctl.core.config import CONFIG_FILENAME
from orbisctl.core.errors import USER_ERRNOS, DataError, StorageError, storage_error
from orbisctl.core.install import Install
from orbisctl.core.progress import NO_PROGRESS, Progress

CONFIG_DIRS = ("secrets", "tls")


def _new_backup_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class _Sink:
    """Streams plaintext into one encrypted component file, reporting progress."""

    def __init__(self, path: Path, data_key: bytes, name: str, progress: Progress) -> None:
        self._file = path.open("wb")
        self._encryptor = crypto.StreamEncryptor(self._file, data_key, name)
        self._progress = progress
        self.name = name

    def write(self, data: bytes) -> int:
        self._encryptor.write(data)
        self._progress.advance(len(data))
        return len(data)

    def finish(self) -> Component:
        try:
            self._encryptor.close()
            self._file.flush()
            os.fsync(self._file.fileno())
        except BaseException:
            self.abort()  # a full disk fails here too: no file left open
            raise
        self._file.close()
        return Component(
            file=COMPONENT_FILES[self.name],
            size=self._encryptor.size,
            sha256=self._encryptor.sha256.hexdigest(),
            plain_size=self._encryptor.plain_size,
        )

    def abort(self) -> None:
        # Closing flushes what is buffered, which fails again on a full disk: the partial
        # directory is removed anyway, and the first error is the one to show.
        with contextlib.suppress(OSError):
            self._file.close()


def _component(
    workdir: Path,
    name: str,
    data_key: bytes,
    progress: Progress,
    produce: Callable[[_Sink], None],
) -> Component:
    sink = _Sink(workdir / COMPONENT_FILES[name], data_key, name, progress)
    try:
        produce(sink)
    except BaseException:
        sink.abort()
        raise
    return sink.finish()


def _stream_rdb(command: Command, sink: _Sink) -> None:
    tail = RdbTail(sink.write)
    stream_out(command, tail.write, what="redis-cli --rdb")
    tail.finish()


def _write_config_bundle(install: Install, sink: IO[bytes]) -> None:
    with tarfile.open(fileobj=sink, mode="w|") as bundle:
        if install.config_file.exists():
            bundle.add(install.config_file, arcname=CONFIG_FILENAME)
        for name in CONFIG_DIRS:
            directory = install.root / name
            if directory.is_dir():
                bundle.add(directory, arcname=name, recursive=True, filter=_not_staged)


def _not_staged(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """An unfinished restore's staged data (under secrets/) is not part of the install."""
    staged = f"{CONFIG_DIRS[0]}/{restore_journal.STAGING_DIRNAME}"
    return None if member.name == staged or member.name.startswith(staged + "/") else member


def create_backup(
    install: Install,
    executor: Executor,
    ring: BackupKeyRing,
    *,
    label: str = "",
    progress: Progress = NO_PROGRESS,
    now: datetime | None = None,
) -> Manifest:
    """Take a consistent backup of the database, Redis and the config; return its manifest.

    The data key is wrapped for the current key of the ring and, when one is set in
    `secrets/backup_escrow.json`, for the passphrase escrow. Row counts and the dump come
    from one exported snapshot, so they agree exactly even while the application writes.
    """
    if ring.current is None:
        raise DataError(
            f"no backup key: {install.secrets_dir / 'backup_key'} is missing",
            hint="run `orbisctl init` to create it, or copy it from the old host",
        )
    created_at = (now or datetime.now(UTC)).replace(microsecond=0)
    backup_id = _new_backup_id(created_at)
    workdir = install.repository / f"{PARTIAL_PREFIX}{backup_id}"
    try:
        install.repository.mkdir(parents=True, exist_ok=True)
        with partials_lock(install.repository):
            # Interrupted backups' leftovers first: they may be what fills the disk.
            sweep_partials(stale_partials(install.repository))
            workdir.mkdir(mode=0o700)
            writer = lock_writer(workdir)
    except OSError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise _write_error(exc, install) from None
    try:
        data_key = crypto.new_data_key()
        wraps = [crypto.wrap_for_key(data_key, ring.current)]
        escrow = load_escrow(install.secrets_dir)
        if escrow is not None:
            wraps.append(crypto.wrap_for_escrow(data_key, escrow))
        components: dict[str, Component] = {}
        with psql_session(executor, executor.database) as session:
            session.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = session.scalar("SELECT pg_export_snapshot()")
            postgres_version = session.scalar("SHOW server_version")
            schema_version = database_schema_version(session)
            tables = [row[0] for row in session.query(table_list_sql())]
            progress.step("dump database and count rows")
            dump = executor.postgres(
                "pg_dump", ["--format=custom", f"--snapshot={snapshot}"], dbname=executor.database
            )
            # The counts scan every table in the same snapshot while pg_dump reads it: run
            # side by side, the counting costs almost no wall time.
            with ThreadPoolExecutor(max_workers=1) as counter:
                counting = counter.submit(count_rows, session, tables)
                components[COMPONENT_DATABASE] = _component(
                    workdir,
                    COMPONENT_DATABASE,
                    data_key,
                    progress,
                    lambda sink: stream_out(dump, sink.write, what="pg_dump"),
                )
                row_counts = counting.result()
            session.query("COMMIT")
        progress.step("dump redis")
        rdb = executor.redis_cli(["--rdb", "-"])
        components[COMPONENT_REDIS] = _component(
            workdir,
            COMPONENT_REDIS,
            data_key,
            progress,
            lambda sink: _stream_rdb(rdb, sink),
        )
        progress.step("bundle config and secrets")
        components[COMPONENT_CONFIG] = _component(
            workdir,
            COMPONENT_CONFIG,
            data_key,
            progress,
            # A stream-mode tarfile only ever calls write() on its file object.
            lambda sink: _write_config_bundle(install, sink),  # type: ignore[arg-type]
        )
        result = Manifest(
            backup_id=backup_id,
            label=label,
            created_at=created_at,
            app_version=__version__,
            schema_version=schema_version,
            postgres_version=postgres_version,
            database=executor.database,
            components=components,
            row_counts=row_counts,
            key_wraps=wraps,
        )
        body = manifest.canonical(result.body())
        manifest_path = workdir / manifest.MANIFEST_FILE
        manifest_path.write_bytes(manifest.render(result, crypto.manifest_mac(data_key, body)))
        with manifest_path.open("rb") as handle:
            os.fsync(handle.fileno())
        publish(workdir, install.repository / backup_id)
    except OSError as exc:
        # Nothing half-written stays: the partial directory goes (freeing a full disk).
        shutil.rmtree(workdir, ignore_errors=True)
        raise _write_error(exc, install) from None
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        os.close(writer)
    return result


def _write_error(exc: OSError, install: Install) -> OSError | StorageError:
    """A file-system refusal while backing up as one StorageError naming where; any other
    OSError unchanged (a bug, shown with its traceback)."""
    if exc.errno not in USER_ERRNOS:
        return exc
    named = Path(str(exc.filename)) if exc.filename else None
    if named is not None and not named.is_relative_to(install.repository):
        # An install file the backup reads (orbis.yaml, secrets/, tls/).
        return storage_error(exc, named, doing="cannot read what the backup holds")
    return storage_error(
        exc,
        install.repository,
        doing="cannot write the backup",
        elsewhere="set backup.location in orbis.yaml to a directory on another file system",
    )
