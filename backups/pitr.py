"""Point-in-time restore of the stack's cluster: `orbisctl restore --to-time` / `--to-latest`.

pgBackRest restores into `pgdata.restoring`, a sibling of the live data directory in the same
volume, from inside the running postgres container; a scratch server (socket only, archiving
off) replays the archived WAL there up to the target and promotes, so reaching the target is
proven before anything that serves changes, and the restored database is checked (schema,
row counts). Only then are api, gateway and postgres stopped and the two directories renamed
(the old one kept as `pgdata.pre-restore-<time>`); postgres starts on the restored cluster, a
new timeline, and a full base backup is taken so the window restarts from it.

`--to-time` restores while the stack serves (what was written after the target is given up
by choice), and its downtime is the switch alone. `--to-latest` stops api and gateway first
so that no write is lost: the server closes its WAL segment, waits for it to be archived, and
everything up to that moment comes back; its downtime is the whole restore.

The journal (`restore/pitr-journal.json`) says what an interrupted restore had done: while
`restoring`, undo removes the sibling directory; once `verified`, finishing renames (the
script goes from whichever of its two renames already happened) and starts the stack.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from backups import archive
from backups.archive import BackupKind
from backups.archive_stack import LOCAL_REPOSITORY, POSTGRES_SERVICE, stack_pgbackrest
from backups.databases import row_counts
from backups.executor import MAINTENANCE_DATABASE, ComposeExecutor, Executor
from backups.fs import atomic_write
from backups.keys import BackupKeyRing
from backups.ports import STEP_STOP_APP, AppControl
from backups.process import psql_session
from backups.restore import restore_journals, take_safety_backup
from backups.restore_journal import RESTORE_DIRNAME
from backups.restore_lock import restore_lock
from backups.schema import code_schema_version, database_schema_version
from orbisctl.core.errors import DataError, EngineError, InstallDirError, OrbisError, UserError
from orbisctl.core.install import Install
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.render import CONTAINER_PGDATA

VOLUME_ROOT = str(Path(CONTAINER_PGDATA).parent)
RESTORING_DIR = f"{CONTAINER_PGDATA}.restoring"
KEPT_PREFIX = f"{Path(CONTAINER_PGDATA).name}.pre-restore-"
# The scratch server's socket (and log) directory, inside the postgres container.
SCRATCH_SOCKET_DIR = "/tmp/orbis-pitr"  # noqa: S108 - the container's private /tmp
JOURNAL_NAME = "pitr-journal.json"
JOURNAL_VERSION = 1
# Replaying a day of WAL can take a while; a scratch server still recovering after this is
# stopped and the restore undone.
RECOVERY_TIMEOUT_SECONDS = 3600
ARCHIVE_WAIT_SECONDS = 120

STEP_SEAL = "close and archive the current WAL segment"
STEP_RESTORE = "pgBackRest: restore into a new data directory"
STEP_REPLAY = "replay WAL to the target"
STEP_CHECK = "check the restored database"
STEP_STOP = "stop api, gateway and postgres"
STEP_SWITCH = "switch the data directory"
STEP_START = "start postgres, api and gateway"
STEP_FULL_BACKUP = "pgBackRest: full base backups of the new timeline"

Phase = Literal["restoring", "verified"]


@dataclass
class PitrJournal:
    target: str | None  # ISO time; None: the latest archived WAL
    started_at: str
    kept_as: str  # what the live data directory is renamed to
    app_stopped: bool  # api and gateway were stopped before the restore (--to-latest)
    phase: Phase = "restoring"
    version: int = JOURNAL_VERSION

    @property
    def label(self) -> str:
        return f"to {self.target}" if self.target else "to the latest archived WAL"


@dataclass(frozen=True)
class PitrJournalStore:
    root: Path

    @property
    def path(self) -> Path:
        return self.root / RESTORE_DIRNAME / JOURNAL_NAME

    def load(self) -> PitrJournal | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            if data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"unknown journal version {data.get('version')!r}")
            return PitrJournal(**data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InstallDirError(
                f"the point-in-time restore journal {self.path} is unreadable: {exc}",
                hint="inspect it by hand (it holds no secrets); see docs/operations.md",
            ) from None

    def save(self, journal: PitrJournal) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path, (json.dumps(asdict(journal), indent=2) + "\n").encode(), mode=0o600)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def journals(install: Install) -> PitrJournalStore:
    return PitrJournalStore(install.root)


@dataclass(frozen=True)
class PitrResult:
    target: str | None
    recovered_to: str  # the restored cluster's newest commit time (ISO), "" when it has none
    row_counts: dict[str, int]
    safety_backup: str | None
    kept_as: str
    dropped: list[str] = field(default_factory=list)
    switch_seconds: float = 0.0
    full_backup: str = ""  # label of the base backup taken after, "" when it failed
    full_backup_error: str = ""


def _in_postgres(install: Install, script: str, *args: str, timeout: float = 600) -> str:
    """Run a shell script as the postgres container's user, in the running container."""
    return install.compose().exec(
        POSTGRES_SERVICE, ["sh", "-c", script, "sh", *args], timeout=timeout
    )


def _on_volume(install: Install, script: str, *args: str) -> str:
    """Run a shell script in a one-off container of the postgres service (postgres stopped)."""
    return install.compose().run(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", POSTGRES_SERVICE,
        "-c", script, "sh", *args,
        timeout=600,
    )  # fmt: skip


_CLEAR_RESTORING = 'rm -rf "$1" && mkdir -m 700 "$1"'

_START_SCRATCH = """
set -eu
dir=$1 sock=$2
rm -rf "$sock" && mkdir -m 700 "$sock"
if ! pg_ctl -D "$dir" -l "$sock/server.log" -w -t 3600 -s start \
    -o "-c listen_addresses='' -c unix_socket_directories=$sock -c port=5432 -c archive_mode=off"
then
    grep -E 'FATAL|PANIC' "$sock/server.log" | tail -n 1 >&2
    exit 1
fi
"""

# After the scratch server promoted: its new timeline's history file is marked for the
# archiver (written while archiving was off, it has no status file), so the live server
# pushes it once it runs on this directory.
_STOP_SCRATCH = """
set -eu
dir=$1
pg_ctl -D "$dir" -m fast -w -s stop
history=$(cd "$dir/pg_wal" && ls | grep '\\.history$' | sort | tail -n 1 || true)
if [ -n "$history" ] && [ ! -e "$dir/pg_wal/archive_status/$history.done" ]; then
    touch "$dir/pg_wal/archive_status/$history.ready"
fi
"""

_STOP_SCRATCH_QUIETLY = 'pg_ctl -D "$1" -m immediate -w -s stop >/dev/null 2>&1 || true'

_SCRATCH_LOG_TAIL = 'grep -E "FATAL|PANIC" "$1/server.log" | tail -n 1'
# Logged by the startup process when recovery ends: the newest commit it replayed.
_RECOVERED_TO = 'sed -n "s/.*last completed transaction was at log time //p" "$1/server.log"'

# Either both renames or the first one already happened (a killed switch): go on from there.
# Kept directories beyond the newest $4 are removed.
_SWITCH = """
set -eu
live=$1 restoring=$2 kept=$3 keep=$4
cd "$(dirname "$live")"
if [ -d "$restoring" ]; then
    if [ -d "$live" ]; then mv "$live" "$kept"; fi
    mv "$restoring" "$live"
fi
prefix=$(basename "$live").pre-restore-
ls -d "$prefix"* 2>/dev/null | sort -r | tail -n +$((keep + 1)) | while read -r old; do
    rm -rf "$old" && echo "$old"
done
"""

# pgBackRest's recovery settings in postgresql.auto.conf are of no use after the promotion
# (they name the sibling path), and archive_mode comes from the server's command line.
_RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target_time",
    "recovery_target_action",
    "recovery_target_timeline",
    "archive_mode",
)


def _scratch_executor(install: Install) -> ComposeExecutor:
    return ComposeExecutor(install.compose(), install.secrets_dir, postgres_host=SCRATCH_SOCKET_DIR)


@dataclass(frozen=True)
class Seal:
    committed: datetime  # the server's time of the sealing commit
    lsn: str  # where the server's WAL stood after it: recovery to the latest must pass it


def seal_archive(executor: Executor, *, timeout: float = ARCHIVE_WAIT_SECONDS) -> Seal:
    """Commit a transaction, close the WAL segment and wait until it is archived. Recovery to
    any earlier moment then finds a commit after it in the archive (it stops there), and
    `--to-latest` must replay past the returned position."""
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        # An xid of its own makes the commit a WAL record with its time.
        committed = datetime.fromtimestamp(
            float(session.scalar("SELECT extract(epoch FROM now()) FROM pg_current_xact_id()")),
            UTC,
        )
        lsn = session.scalar("SELECT pg_current_wal_lsn()")
        segment = session.scalar("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + timeout
    while True:
        state = archive.archiver_state(executor)
        if state.last_archived_wal is not None and state.last_archived_wal[:24] >= segment:
            return Seal(committed, lsn)
        if time.monotonic() > deadline:
            raise EngineError(
                f"WAL segment {segment} was not archived within {timeout:.0f} s "
                f"(last archived: {state.last_archived_wal or 'none'})",
                hint="`orbisctl backup status` shows the archiver; `orbisctl logs postgres` "
                "shows why pgBackRest cannot push",
            )
        time.sleep(0.5)


def _check_replayed_past(executor: Executor, seal: Seal) -> None:
    """Recovery without a target ends wherever the archive stops being readable: a missing
    or corrupt segment would silently cut the newest writes off. Refuse that."""
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        replayed = session.scalar("SELECT pg_last_wal_replay_lsn()")
        reached = session.scalar(f"SELECT '{replayed}'::pg_lsn >= '{seal.lsn}'::pg_lsn")
    if reached != "t":
        raise DataError(
            f"recovery stopped at WAL position {replayed}, before the archive's end "
            f"({seal.lsn}): a WAL segment after it is missing or unreadable; nothing was changed",
            hint="`orbisctl backup verify` names the damaged file; `--to-time` up to the "
            "last readable moment restores what the archive still holds",
        )


def _window(install: Install, executor: Executor, repo: int) -> archive.RecoveryWindow | None:
    """Repository `repo`'s window; a repository the stack does not have is refused."""
    pgbackrest = stack_pgbackrest(install)
    archiver = archive.archiver_state(executor)
    states = archive.repository_states(pgbackrest)
    for state in states:
        if state.repo == repo:
            return archive.recovery_window(state, archiver)
    raise UserError(
        f"this install has no pgBackRest repository {repo}",
        hint=f"its repositories: {', '.join(str(s.repo) for s in states)} "
        "(2 is backup.remote, when it is set)",
    )


@contextlib.contextmanager
def _scratch_server(install: Install) -> Iterator[None]:
    """The scratch server on the restored directory, stopped at the end (cleanly when the
    body finished, at once when it failed)."""
    try:
        _in_postgres(install, _START_SCRATCH, RESTORING_DIR, SCRATCH_SOCKET_DIR, timeout=3700)
    except EngineError as exc:
        _in_postgres(install, _STOP_SCRATCH_QUIETLY, RESTORING_DIR)
        raise DataError(
            f"the restored cluster did not start: {exc.message.split(': ', 1)[-1]}",
            hint="nothing was changed; `orbisctl backup status` shows the recoverable window",
        ) from None
    try:
        yield
    except BaseException:
        _in_postgres(install, _STOP_SCRATCH_QUIETLY, RESTORING_DIR)
        raise
    _in_postgres(install, _STOP_SCRATCH, RESTORING_DIR)


def _wait_promoted(install: Install, executor: Executor) -> None:
    """Until the scratch server has left recovery: it promotes once it reached the target
    (PostgreSQL refuses to promote when the archived WAL ends before it)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
    while True:
        try:
            with psql_session(executor, MAINTENANCE_DATABASE) as session:
                if session.scalar("SELECT pg_is_in_recovery()") == "f":
                    return
        except OrbisError:
            tail = _in_postgres(install, _SCRATCH_LOG_TAIL, SCRATCH_SOCKET_DIR).strip()
            raise DataError(
                f"recovery of the restored cluster failed: {tail or 'the server stopped'}",
                hint="nothing was changed; `orbisctl backup status` shows the recoverable window",
            ) from None
        if time.monotonic() > deadline:
            raise EngineError(
                f"the restored cluster was still replaying WAL after "
                f"{RECOVERY_TIMEOUT_SECONDS} s; nothing was changed",
                hint="retry with a target closer to a base backup",
            )
        time.sleep(0.5)


def _check_restored(executor: Executor, live_database: str) -> dict[str, int]:
    """The restored database's row counts; refuse one without our schema or with a newer one
    than this code knows. Then clear the recovery settings."""
    with psql_session(executor, live_database) as session:
        version = database_schema_version(session)
    if version is None:
        raise DataError(
            f"the restored cluster has no migrated {live_database} database",
            hint="nothing was changed; pick a later time",
        )
    if version > code_schema_version():
        raise DataError(
            f"the restored database's schema (version {version}) is newer than this code "
            f"knows ({code_schema_version()})",
            hint="nothing was changed; upgrade OrbisVoice first",
        )
    counts = row_counts(executor, live_database)
    with psql_session(executor, MAINTENANCE_DATABASE) as session:
        for setting in _RECOVERY_SETTINGS:
            session.query(f"ALTER SYSTEM RESET {setting}")
    return counts


def _restore_and_check(
    install: Install,
    target: datetime | None,
    seal: Seal,
    live_database: str,
    repo: int,
    progress: Progress,
) -> tuple[str, dict[str, int]]:
    progress.step(STEP_RESTORE)
    _in_postgres(install, _CLEAR_RESTORING, RESTORING_DIR)
    archive.restore_to_time(stack_pgbackrest(install), RESTORING_DIR, target, repo=repo)
    scratch = _scratch_executor(install)
    with _scratch_server(install):
        progress.step(STEP_REPLAY)
        _wait_promoted(install, scratch)
        progress.step(STEP_CHECK)
        if target is None:
            _check_replayed_past(scratch, seal)
        counts = _check_restored(scratch, live_database)
        lines = _in_postgres(install, _RECOVERED_TO, SCRATCH_SOCKET_DIR).strip().splitlines()
    return (lines[-1] if lines else ""), counts


def restore_stack_to_time(
    install: Install,
    executor: Executor,
    app: AppControl,
    ring: BackupKeyRing,
    target: datetime | None,
    *,
    repo: int = LOCAL_REPOSITORY,
    safety_backup: bool = True,
    keep_previous: int = 1,
    progress: Progress = NO_PROGRESS,
    now: datetime | None = None,
) -> PitrResult:
    """Restore the stack's database to `target` (None: the latest archived WAL) from
    repository `repo`; on any failure before the switch the stack is as it was."""
    started = now or datetime.now(UTC)
    store = journals(install)
    with restore_lock(install.repository, f"point-in-time {target or 'latest'}"):
        _refuse_unfinished(install)
        app_stopped = False
        stopped_at = None
        try:
            if target is None:
                progress.step(STEP_STOP_APP)
                stopped_at = time.monotonic()
                app.stop()
                app_stopped = True
            progress.step(STEP_SEAL)
            seal = seal_archive(executor)
            window = _window(install, executor, repo)
            if target is not None:
                archive.check_target(target, window)
            elif window is None:
                archive.check_target(started, window)  # refuses: no base backup yet
            safety_id = (
                take_safety_backup(install, executor, ring, progress, now)
                if safety_backup
                else None
            )
            journal = PitrJournal(
                target=target.astimezone(UTC).isoformat() if target else None,
                started_at=started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                kept_as=f"{KEPT_PREFIX}{started:%Y%m%d%H%M%S}",
                app_stopped=app_stopped,
            )
            store.save(journal)
            try:
                recovered_to, counts = _restore_and_check(
                    install, target, seal, executor.database, repo, progress
                )
            except BaseException:
                _in_postgres(install, 'rm -rf "$1"', RESTORING_DIR)
                store.finish()
                raise
        except BaseException:
            if app_stopped:
                # No step of its own: the one that failed stays the one reported.
                app.start()
            raise
        journal.phase = "verified"
        store.save(journal)
        dropped, switch_started = _switch(install, app, journal, keep_previous, progress)
        seconds = time.monotonic() - (stopped_at or switch_started)
        label, error = _full_backup(install, progress)
        store.finish()
    return PitrResult(
        target=journal.target,
        recovered_to=recovered_to,
        row_counts=counts,
        safety_backup=safety_id,
        kept_as=journal.kept_as,
        dropped=dropped,
        switch_seconds=round(seconds, 1),
        full_backup=label,
        full_backup_error=error,
    )


def _refuse_unfinished(install: Install) -> None:
    unfinished = journals(install).load() or restore_journals(install).load()
    if unfinished is not None:
        raise UserError(
            "an earlier restore is unfinished",
            hint="`orbisctl restore --resume` finishes it, `--abort` undoes it",
        )


def _switch(
    install: Install, app: AppControl, journal: PitrJournal, keep: int, progress: Progress
) -> tuple[list[str], float]:
    """Stop what writes, rename the directories, start it all on the restored cluster.

    A failure here leaves the stack stopped (nginx answers 503): postgres must not start on a
    half-renamed volume, where its entrypoint would make a new empty cluster; `--resume`
    runs the switch again from where it stopped."""
    compose = install.compose()
    progress.step(STEP_STOP)
    stopped_at = time.monotonic()
    try:
        if not journal.app_stopped:
            app.stop()
        compose.run("stop", POSTGRES_SERVICE, timeout=300)
        progress.step(STEP_SWITCH)
        removed = _on_volume(
            install,
            _SWITCH,
            CONTAINER_PGDATA,
            Path(RESTORING_DIR).name,
            journal.kept_as,
            str(keep),
        ).split()
        progress.step(STEP_START)
        compose.run("start", POSTGRES_SERVICE, timeout=300)
        _wait_accepting(install)
    except EngineError as exc:
        raise EngineError(
            f"the switch to the restored cluster stopped: {exc.message}",
            hint="`orbisctl restore --resume` goes on with it once the cause is fixed",
        ) from None
    app.start()
    return removed, stopped_at


def _wait_accepting(install: Install, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _in_postgres(install, "pg_isready -q -U orbis -d postgres", timeout=30)
            return
        except EngineError:
            if time.monotonic() > deadline:
                raise EngineError(
                    f"postgres did not accept connections within {timeout:.0f} s after the switch",
                    hint="`orbisctl logs postgres` shows why; `orbisctl restore --resume` "
                    "retries the start",
                ) from None
            time.sleep(1)


def _full_backup(install: Install, progress: Progress) -> tuple[str, str]:
    """A full base backup of the new timeline into every repository; the local one's label.
    A failure is reported, not raised: the restore itself is done, and the next `backup
    create` takes it."""
    progress.step(STEP_FULL_BACKUP)
    pgbackrest = stack_pgbackrest(install)
    try:
        for state in archive.repository_states(pgbackrest):
            archive.base_backup(pgbackrest, BackupKind.FULL, repo=state.repo)
        states = {s.repo: s for s in archive.repository_states(pgbackrest)}
    except OrbisError as exc:
        return "", exc.message
    newest = states[LOCAL_REPOSITORY].newest if LOCAL_REPOSITORY in states else None
    return (newest.label if newest else ""), ""


@dataclass(frozen=True)
class FinishedPitr:
    label: str
    outcome: Literal["finished", "undone"]


def finish_pitr(
    install: Install, app: AppControl, *, abort: bool = False, keep_previous: int = 1,
    progress: Progress = NO_PROGRESS,
) -> FinishedPitr | None:  # fmt: skip
    """Finish (once verified) or undo (while restoring) an interrupted point-in-time
    restore; None when there is none."""
    store = journals(install)
    journal = store.load()
    if journal is None:
        return None
    with restore_lock(install.repository, f"point-in-time {journal.label}"):
        if journal.phase == "verified":
            if abort:
                raise UserError(
                    f"the restore {journal.label} was verified and may have switched; it can "
                    "only be finished",
                    hint="`orbisctl restore --resume` finishes it",
                )
            _switch(install, app, journal, keep_previous, progress)
            _full_backup(install, progress)
            store.finish()
            return FinishedPitr(journal.label, "finished")
        compose = install.compose()
        # A kill may have left postgres stopped (never in this phase by us, but by hand).
        compose.run("start", POSTGRES_SERVICE, timeout=300)
        _wait_accepting(install)
        _in_postgres(install, _STOP_SCRATCH_QUIETLY, RESTORING_DIR)
        _in_postgres(install, 'rm -rf "$1"', RESTORING_DIR)
        if journal.app_stopped:
            app.stop()  # a killed restore's stop may still be under way in the engine
        app.start()
        store.finish()
        return FinishedPitr(journal.label, "undone")


def parse_target(text: str, *, now: datetime | None = None) -> datetime:
    """The `--to-time` value, refused when it lies in the future."""
    target = archive.parse_target_time(text)
    if target > (now or datetime.now(UTC)) + timedelta(seconds=1):
        raise DataError(
            f"{target.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC is in the future",
            hint="give a past time; `--to-latest` restores everything archived",
        )
    return target
