"""Restore a backup into the install: database, Redis and (with `--with-secrets`) the config.

A restore keeps a journal (`backups.restore_journal`) from which an interrupted one is
finished or undone (`finish_restore`); `restore_config_only` brings back the config alone,
the first step on a new host.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backups import kept
from backups.create import CONFIG_DIRS, create_backup
from backups.databases import count_mismatches, database_exists, drop_database, row_counts
from backups.executor import MAINTENANCE_DATABASE, Executor
from backups.keys import BackupKeyRing
from backups.manifest import COMPONENT_CONFIG, COMPONENT_REDIS, Manifest
from backups.ports import (
    STEP_CHECK_ROWS,
    STEP_DROP_SCRATCH,
    STEP_RESTORE_CONFIG,
    STEP_RESTORE_REDIS,
    STEP_SAFETY_BACKUP,
    STEP_STAGE_CONFIG,
    STEP_STAGE_REDIS,
    STEP_START_APP,
    STEP_STOP_APP,
    STEP_SWITCH_DATABASE,
    AppControl,
)
from backups.process import psql_session, quote_ident, quote_literal
from backups.restore_journal import RestoreJournal, RestoreJournalStore
from backups.restore_lock import restore_lock
from backups.schema import code_schema_version
from backups.verify import Verified, decrypted, open_without_dump, refuse, restore_database
from orbisctl.core.config import CONFIG_FILENAME
from orbisctl.core.errors import USER_ERRNOS, DataError, StorageError, UserError, storage_error
from orbisctl.core.install import Install
from orbisctl.core.progress import NO_PROGRESS, Progress


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    database: str
    previous_database: str | None  # the old data, kept under this name
    safety_backup: str | None
    row_counts: dict[str, int]
    restored_config: bool
    # Older kept databases dropped after the restore (backup.keep_previous_databases).
    dropped_databases: list[str] = field(default_factory=list)
    # From the stop of api and gateway until they answered again (with an app to stop).
    switch_seconds: float = 0.0


def _check_schema(verified: Verified) -> None:
    backup_schema = verified.manifest.schema_version
    known = code_schema_version()
    if backup_schema is not None and backup_schema > known:
        raise refuse(
            verified.path,
            f"its database schema (version {backup_schema}) is newer than this code knows "
            f"({known})",
            hint="upgrade OrbisVoice to the release that made the backup, then restore",
        )


def _switch_databases(executor: Executor, live: str, restored: str, keep_as: str | None) -> None:
    """Rename in one transaction: either the restored database serves, or the old one does."""
    statements = []
    if keep_as is not None:
        statements.append(f"ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(keep_as)}")
    statements.append(f"ALTER DATABASE {quote_ident(restored)} RENAME TO {quote_ident(live)}")
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        # Nothing should be connected now that the app is stopped; stragglers are cut off.
        session.query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608
            f"WHERE datname = {quote_literal(live)} AND pid <> pg_backend_pid()"
        )
        session.query("BEGIN")
        for statement in statements:
            session.query(statement)
        session.query("COMMIT")


_OWNERS_FILE = "owners.json"


def _stage_config(verified: Verified, staging: Path, progress: Progress) -> None:
    """Unpack the backup's orbis.yaml, secrets/ and tls/ into `staging/config`, with the
    owners the bundle recorded in `staging/owners.json`; nothing of the install changes."""
    component = verified.manifest.components[COMPONENT_CONFIG]
    progress.step(STEP_STAGE_CONFIG, component.plain_size)
    with tempfile.TemporaryFile(dir=staging) as buffer:
        for piece in decrypted(
            verified.path, component, verified.data_key, COMPONENT_CONFIG, progress
        ):
            buffer.write(piece)
        buffer.seek(0)
        with tarfile.open(fileobj=buffer, mode="r:") as bundle:
            allowed = (CONFIG_FILENAME, *CONFIG_DIRS)
            owners = {}
            for member in bundle.getmembers():
                if member.name.split("/", 1)[0] not in allowed:
                    raise refuse(verified.path, f"config bundle holds {member.name!r}")
                owners[member.name] = (member.uid, member.gid)
            bundle.extractall(staging / "config", filter="data")
    (staging / _OWNERS_FILE).write_text(json.dumps(owners))


def _apply_config(staging: Path, install: Install, progress: Progress) -> list[Path]:
    """Copy the staged config over the install, each file replaced atomically, those already
    the same left alone (so a second run after a kill changes nothing twice); return every
    staged file's place in the install, for `stale_services` to judge by modification time.

    Modes are set, not copied: secrets and private keys 0600 (their directory 0700); owners
    are those recorded in the bundle (when running as root).
    """
    progress.step(STEP_RESTORE_CONFIG)
    owners = {
        name: tuple(ids) for name, ids in json.loads((staging / _OWNERS_FILE).read_text()).items()
    }
    unpacked = staging / "config"
    targets = []
    for source in sorted(unpacked.rglob("*")):
        relative = source.relative_to(unpacked)
        target = install.root / relative
        secret = relative.parts[0] == "secrets" or relative.suffix == ".key"
        if source.is_dir():
            target.mkdir(exist_ok=True)
            target.chmod(0o700 if secret else 0o755)
            continue
        targets.append(target)
        if _same_content(source, target):
            continue
        tmp_target = target.with_name(f".{target.name}.restore-tmp")
        shutil.copyfile(source, tmp_target)
        tmp_target.chmod(0o600 if secret else 0o644)
        # Secrets mounted into containers belong to the containers' uid: the owner
        # recorded at backup time comes back with the file.
        owner = owners.get(relative.as_posix())
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp_target, *owner)
        tmp_target.replace(target)
    return targets


def _same_content(source: Path, target: Path) -> bool:
    try:
        return target.read_bytes() == source.read_bytes()
    except FileNotFoundError:
        return False


def restore_journals(install: Install) -> RestoreJournalStore:
    return RestoreJournalStore(install.root, install.secrets_dir)


def restore_backup(
    install: Install,
    executor: Executor,
    ring: BackupKeyRing,
    ref_path: Path,
    *,
    app: AppControl,
    passphrase: str | None = None,
    with_secrets: bool = False,
    safety_backup: bool = True,
    keep_previous_databases: int | None = None,
    progress: Progress = NO_PROGRESS,
    now: datetime | None = None,
) -> RestoreResult:
    """Restore a backup so that an interruption at any point leaves a journal from which
    `finish_restore` goes forward to the restored state or back to the previous one.

    The dump goes into a scratch database, and the Redis snapshot (and with `with_secrets`
    the config bundle) is decrypted into the staging directory; only when the scratch
    database restored completely and its row counts match the manifest are api and gateway
    stopped, and then everything is switched while they are down: the database by a rename
    in one transaction (the old one kept as `<db>_pre_restore_<timestamp>`), the files, and
    Redis. Kept databases beyond the newest `keep_previous_databases` are dropped (None: none).
    """
    started = now or datetime.now(UTC)
    live = executor.database
    journals = restore_journals(install)
    with restore_lock(install.repository, ref_path.name):
        unfinished = journals.load()
        if unfinished is not None:
            raise UserError(
                f"a restore of {unfinished.backup_id} is unfinished",
                hint="`orbisctl restore --resume` finishes it, `--abort` undoes it",
            )
        # The dump's chunks authenticate as they stream into the new database: a bad chunk
        # stops pg_restore there, and the new database is dropped, so a separate pass over
        # the largest component would only add time.
        verified = open_without_dump(ref_path, ring, passphrase, progress)
        _check_schema(verified)
        live_exists = database_exists(executor, live)
        safety_id = None
        if safety_backup and live_exists:
            safety_id = take_safety_backup(install, executor, ring, progress, now)
        # Names carry the second the restore started; one that second already kept (two
        # restores within a second) moves the stamp on.
        while live_exists and database_exists(executor, kept.kept_name(live, started)):
            started += timedelta(seconds=1)
        journal = RestoreJournal(
            backup_id=verified.manifest.backup_id,
            live=live,
            scratch=f"{live}_restore_{started.strftime('%Y%m%d%H%M%S')}",
            keep_as=kept.kept_name(live, started) if live_exists else None,
            with_secrets=with_secrets,
            started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        journals.save(journal)
        try:
            counts = _prepare(verified, executor, journals, journal, progress)
        except BaseException:
            drop_database(executor, journal.scratch)
            journals.finish()
            raise
        journal.phase = "prepared"
        journals.save(journal)
        dropped, switch_seconds = _switch(
            install, executor, app, journals, journal, keep_previous_databases, progress
        )
    return RestoreResult(
        backup_id=journal.backup_id,
        database=live,
        previous_database=journal.keep_as,
        safety_backup=safety_id,
        row_counts=counts,
        restored_config=with_secrets,
        dropped_databases=dropped,
        switch_seconds=round(switch_seconds, 1),
    )


def take_safety_backup(
    install: Install,
    executor: Executor,
    ring: BackupKeyRing,
    progress: Progress,
    now: datetime | None,
) -> str:
    progress.step(STEP_SAFETY_BACKUP)
    if ring.current is None:
        raise DataError(
            "cannot take the safety backup: this host has no backup key",
            hint="run `orbisctl init` first, or pass --no-safety-backup",
        )
    try:
        return create_backup(install, executor, ring, label="pre-restore", now=now).backup_id
    except StorageError as exc:
        # Nothing is changed yet: the current data keeps serving.
        raise StorageError(
            f"cannot take the safety backup of the current data: {exc.message}; "
            "nothing was restored",
            hint=f"{exc.hint}; or pass --no-safety-backup to restore without one",
        ) from None


def _drop_leftovers(executor: Executor, live: str) -> None:
    """Scratch databases of restores and deep verifies that were killed half-way.

    Only names this module and `backups.verify` make are matched, and none of them ever
    serves: the restored copy is renamed to the live name in the same transaction that frees it.
    """
    prefixes = (f"{live}_restore_", f"{live}_verify_")
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        names = [row[0] for row in session.query("SELECT datname FROM pg_database")]
    for name in names:
        if name.startswith(prefixes):
            drop_database(executor, name)


def _prepare(
    verified: Verified,
    executor: Executor,
    journals: RestoreJournalStore,
    journal: RestoreJournal,
    progress: Progress,
) -> dict[str, int]:
    """Fill and check the scratch database and stage the rest; nothing that serves changes."""
    _drop_leftovers(executor, journal.live)
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        # The restored database keeps the owner of the one it replaces (none: a new host).
        owner = (
            session.scalar(
                "SELECT pg_get_userbyid(datdba) FROM pg_database "  # noqa: S608
                f"WHERE datname = {quote_literal(journal.live)}"
            )
            if journal.keep_as is not None
            else None
        )
        owner_clause = f" OWNER {quote_ident(owner)}" if owner else ""
        session.query(f"CREATE DATABASE {quote_ident(journal.scratch)}{owner_clause}")
    restore_database(verified, executor, journal.scratch, progress)
    progress.step(STEP_CHECK_ROWS)
    counts = row_counts(executor, journal.scratch)
    problems = count_mismatches(verified.manifest.row_counts, counts)
    if problems:
        raise refuse(
            verified.path, "restored row counts differ from the manifest: " + "; ".join(problems)
        )
    staging = journals.new_staging()
    if journal.with_secrets:
        _stage_config(verified, staging, progress)
    _stage_redis(verified, staging, progress)
    return counts


def _switch(
    install: Install,
    executor: Executor,
    app: AppControl,
    journals: RestoreJournalStore,
    journal: RestoreJournal,
    keep_previous_databases: int | None,
    progress: Progress,
) -> tuple[list[str], float]:
    """Stop api and gateway, switch database, files and Redis to the restored state, start
    them again; the kept databases dropped, and the seconds api and gateway were down. Each
    step may be run again after a kill: the database switch only while the scratch database
    exists, files only where they differ, Redis reloaded from the stage."""
    progress.step(STEP_STOP_APP)
    stopped_at = time.monotonic()
    app.stop()
    restored_files: list[Path] = []
    try:
        if journal.phase != "switched":
            if database_exists(executor, journal.scratch):
                progress.step(STEP_SWITCH_DATABASE)
                _switch_databases(executor, journal.live, journal.scratch, journal.keep_as)
            journal.phase = "switched"
            journals.save(journal)
        if journal.with_secrets:
            # Secrets before Redis: the stack's Redis takes its password from the mounted
            # secret file when the RDB install restarts it, and api and gateway start (below)
            # with the restored password. Once written, the restored files are what every
            # service must read, even if a later step fails: `start` restarts the stale ones.
            restored_files = _apply_config(journals.staging, install, progress)
        progress.step(STEP_RESTORE_REDIS)
        executor.load_redis(journals.staging / _STAGED_RDB)
    finally:
        progress.step(STEP_START_APP)
        app.start(restored_files)
    switch_seconds = time.monotonic() - stopped_at
    dropped = (
        kept.drop_beyond(executor, keep_previous_databases)
        if keep_previous_databases is not None
        else []
    )
    journals.finish()
    return dropped, switch_seconds


@dataclass(frozen=True)
class FinishedRestore:
    backup_id: str
    outcome: str  # "finished": the restored state serves; "undone": the previous one does
    dropped_databases: list[str] = field(default_factory=list)


def finish_restore(
    install: Install,
    executor: Executor,
    app: AppControl,
    *,
    abort: bool = False,
    keep_previous_databases: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> FinishedRestore | None:
    """Finish or undo a restore that was interrupted (None: there is none).

    Forward when the switch happened (the scratch database is gone, renamed into place),
    back otherwise (the scratch database is dropped, the staged data removed); either way
    api and gateway are started and the maintenance flag is cleared. `abort` refuses once the
    restored database serves: its previous database is kept, but Redis and the files may
    already be the restored ones, so only going forward ends in one consistent state.
    """
    journals = restore_journals(install)
    journal = journals.load()
    if journal is None:
        return None
    with restore_lock(install.repository, journal.backup_id):
        forward = journal.phase == "switched" or (
            journal.phase == "prepared" and not database_exists(executor, journal.scratch)
        )
        if (
            forward
            and journal.phase == "prepared"
            and journal.keep_as is not None
            and not database_exists(executor, journal.keep_as)
        ):
            raise DataError(
                f"the unfinished restore of {journal.backup_id} cannot be judged: neither "
                f"{journal.scratch} nor {journal.keep_as} exists",
                hint=f"check which database serves, then remove {journals.journal_path}",
            )
        if forward and abort:
            raise UserError(
                f"the restore of {journal.backup_id} already switched the database; it can "
                "only be finished",
                hint="`orbisctl restore --resume` finishes it; a safety backup, if one was "
                "taken, brings the previous state back",
            )
        if forward:
            dropped, _ = _switch(
                install, executor, app, journals, journal, keep_previous_databases, progress
            )
            return FinishedRestore(journal.backup_id, "finished", dropped)
        if database_exists(executor, journal.scratch):
            progress.step(STEP_DROP_SCRATCH)
            drop_database(executor, journal.scratch)
        if journal.phase == "prepared":
            # The killed restore may have been stopping api and gateway: the engine carries
            # a stop on after its client died, and would end it after our start.
            progress.step(STEP_STOP_APP)
            app.stop()
        progress.step(STEP_START_APP)
        app.start()
        journals.finish()
        return FinishedRestore(journal.backup_id, "undone")


def restore_config_only(
    install: Install,
    ring: BackupKeyRing,
    ref_path: Path,
    *,
    passphrase: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> Manifest:
    """Bring back orbis.yaml, secrets/ and tls/ only: the first step on a new host.

    No database is touched, so it runs before `orbisctl up`; the stack then starts with the
    old host's passwords, and a normal restore brings the data back.
    """
    with restore_lock(install.repository, ref_path.name):
        verified = open_without_dump(ref_path, ring, passphrase, progress)
        install.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".config-restore-", dir=install.root) as tmp:
            _stage_config(verified, Path(tmp), progress)
            _apply_config(Path(tmp), install, progress)
    return verified.manifest


_STAGED_RDB = "dump.rdb"


def _stage_redis(verified: Verified, staging: Path, progress: Progress) -> None:
    component = verified.manifest.components[COMPONENT_REDIS]
    progress.step(STEP_STAGE_REDIS, component.plain_size)
    rdb = staging / _STAGED_RDB
    try:
        fd = os.open(rdb, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for piece in decrypted(
                verified.path, component, verified.data_key, COMPONENT_REDIS, progress
            ):
                handle.write(piece)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        raise storage_error(exc, staging, doing="cannot stage the Redis snapshot") from None
