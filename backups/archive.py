"""Continuous archiving with pgBackRest (issue 16): its configuration, its commands, and what
its repositories can recover.

pgBackRest keeps base backups and every WAL segment PostgreSQL completes (`archive-push`, run
by the server's `archive_command`) in one or more repositories: a directory (`posix`) or an
S3-compatible bucket (`s3`). Any second between the end of the oldest base backup and the last
archived segment can then be restored (`restore --type=time`).

Like the logical engine, nothing here knows where pgBackRest runs: a `PgBackRest` is a command
prefix (on this host as the cluster's owner, or `docker compose exec -T postgres` in the stack)
plus the configuration it reads (rendered by `backups/pgbackrest_config.py`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from backups import pgbackrest_config
from backups.executor import Command, Executor
from backups.pgbackrest_config import STANZA, pgbackrest_argv
from backups.process import psql_session
from orbisctl.core.errors import DataError, EngineError, OrbisError

_LOG_PREFIX = re.compile(r"^.*?P\d+ +[A-Z]+: ")
# A file that fails its checksum, or one that does not even decompress or decrypt.
_INVALID = re.compile(r"invalid checksum|invalid result|status: (invalid|error)|invalid: [1-9]")
# pgBackRest's own exit code when a command finds another one holding its lock.
_LOCK_HELD = 50
# `info`'s status of a repository it can read that holds no base backup yet.
NO_VALID_BACKUPS = "no valid backups"


class BackupKind(StrEnum):
    FULL = "full"
    DIFFERENTIAL = "diff"
    INCREMENTAL = "incr"


def archive_command(pgbackrest: PgBackRest) -> str:
    """PostgreSQL's archive_command for this stanza; the server runs it as itself, so
    without `pgbackrest.prefix`."""
    return pgbackrest_config.archive_command(pgbackrest.config_file, pgbackrest.include_dir)


@dataclass(frozen=True)
class PgBackRest:
    """How to run pgbackrest: `prefix` runs it as the cluster's owner (e.g. `runuser -u
    postgres --` here, `docker compose exec -T postgres` in the stack)."""

    prefix: tuple[str, ...] = ()
    config_file: str | None = None
    # Where the secret half is (`render_secret_config`); pgBackRest's default is
    # /etc/pgbackrest/conf.d, also when `config_file` is given.
    include_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def command(self, args: Sequence[str]) -> Command:
        argv = pgbackrest_argv(self.config_file, self.include_dir, args)
        return Command([*self.prefix, *argv], dict(self.env))

    def run(
        self,
        args: Sequence[str],
        *,
        what: str,
        timeout: float = 3600,
        refusal: type[OrbisError] = EngineError,
    ) -> str:
        """Run one pgbackrest command; its stdout, or a `refusal` naming pgBackRest's error."""
        command = self.command(args)
        try:
            done = subprocess.run(
                command.argv,
                env={**os.environ, **command.env},
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise EngineError(
                "pgbackrest is not installed", hint="install Debian's pgbackrest package"
            ) from None
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"pgBackRest {what} did not finish in {timeout:.0f} s",
                hint="see pgBackRest's log; run the command again once the cause is fixed",
            ) from None
        if done.returncode != 0:
            raise _failure(what, done.returncode, done.stdout + done.stderr, refusal)
        return done.stdout


def _failure(what: str, code: int, output: str, refusal: type[OrbisError]) -> OrbisError:
    """pgBackRest prints `ERROR: [NNN]: message:` and the cause on the lines after it; those
    two are what the operator needs."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if "ERROR:" in line]
    if starts:
        first = starts[-1]
        reason = lines[first].split("ERROR:", 1)[1].strip()
        cause = next((line.strip() for line in lines[first + 1 :] if line.strip()), "")
        if reason.endswith(":") and cause:
            reason = f"{reason} {cause}"
    else:
        reason = (output.strip().splitlines() or [f"exit code {code}"])[-1]
    if code == _LOCK_HELD:
        return EngineError(
            f"pgBackRest {what}: another pgBackRest command is running ({reason})",
            hint="wait for it to finish, then run this again",
        )
    return refusal(f"pgBackRest {what} failed: {reason}", hint=_hint_for(output))


def _hint_for(output: str) -> str:
    lowered = output.lower()
    if any(
        sign in lowered
        for sign in ("signaturedoesnotmatch", "invalidaccesskeyid", "accessdenied", " 403 ")
    ):
        return "check backup.remote's access key and secret key files in secrets/"
    if "nosuchbucket" in lowered:
        return "create the bucket named by backup.remote.bucket, or fix its name"
    if "unable to connect" in lowered or "unable to get address" in lowered:
        return "check that backup.remote.endpoint is reachable from this host"
    if "cryptoerror" in lowered or "is or was the repo encrypted" in lowered:
        return "the repository's passphrase (secrets/archive_key) is not the one it was made with"
    return "see the message above; `orbisctl backup status` shows each repository's state"


def create_stanza(pgbackrest: PgBackRest) -> None:
    """Make the stanza in every repository (idempotent: an existing one is checked, kept)."""
    pgbackrest.run(["stanza-create"], what="stanza-create", timeout=300)


def check_archiving(pgbackrest: PgBackRest) -> None:
    """Have the server switch WAL and wait until that segment is in every repository."""
    pgbackrest.run(["check"], what="check", timeout=300)


def base_backup(pgbackrest: PgBackRest, kind: BackupKind, *, repo: int = 1) -> None:
    """A base backup of `kind` into repository `repo`; expired backups go after it."""
    pgbackrest.run(
        [f"--repo={repo}", f"--type={kind.value}", "backup"], what=f"{kind.value} backup"
    )


def verify_repository(pgbackrest: PgBackRest, *, repo: int = 1) -> None:
    """`pgbackrest verify`: every backup file and WAL segment read back against its checksum."""
    output = pgbackrest.run(
        [f"--repo={repo}", "verify"], what=f"verify of repository {repo}", refusal=DataError
    )
    # 2.45 exits 0 when a file fails its checksum; its summary says `status: invalid`,
    # `checksum invalid: N` and names each such file.
    problems = [_LOG_PREFIX.sub("", line) for line in output.splitlines() if _INVALID.search(line)]
    if problems:
        raise DataError(
            f"pgBackRest verify of repository {repo} failed: {problems[0]}",
            hint="take a new full backup (`orbisctl backup create`) and find the cause",
        )


@dataclass(frozen=True)
class BaseBackup:
    label: str
    kind: BackupKind
    started: datetime
    stopped: datetime
    # The WAL segments a restore of it needs at the least.
    wal_start: str
    wal_stop: str


@dataclass(frozen=True)
class RepositoryState:
    """What one repository holds, from `pgbackrest info`."""

    repo: int
    status: str
    backups: tuple[BaseBackup, ...]
    wal_min: str | None
    wal_max: str | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def readable(self) -> bool:
        """pgBackRest could read the repository: ok, or a stanza that has no base backup yet."""
        return self.ok or self.status == NO_VALID_BACKUPS

    @property
    def oldest(self) -> BaseBackup | None:
        return self.backups[0] if self.backups else None

    @property
    def newest(self) -> BaseBackup | None:
        return self.backups[-1] if self.backups else None

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "status": self.status,
            "backups": [
                {
                    "label": b.label,
                    "type": b.kind.value,
                    "started": b.started.isoformat(),
                    "stopped": b.stopped.isoformat(),
                }
                for b in self.backups
            ],
            "wal_min": self.wal_min,
            "wal_max": self.wal_max,
        }


def _timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def parse_info(text: str) -> list[RepositoryState]:
    """`pgbackrest info --output=json` for the stanza, one state per repository."""
    try:
        # strict=False: a repository error message can carry raw bytes of a bad file.
        stanzas = json.loads(text, strict=False)
        stanza = next(s for s in stanzas if s["name"] == STANZA)
    except (ValueError, StopIteration, KeyError, TypeError):
        raise DataError(
            f"pgBackRest's info has no stanza {STANZA!r}",
            hint="run `orbisctl up`, which creates the stanza",
        ) from None
    by_repo: dict[int, list[BaseBackup]] = {}
    for entry in stanza.get("backup", []):
        by_repo.setdefault(int(entry["database"]["repo-key"]), []).append(
            BaseBackup(
                label=entry["label"],
                kind=BackupKind(entry["type"]),
                started=_timestamp(entry["timestamp"]["start"]),
                stopped=_timestamp(entry["timestamp"]["stop"]),
                wal_start=entry["archive"]["start"],
                wal_stop=entry["archive"]["stop"],
            )
        )
    wal: dict[int, tuple[str | None, str | None]] = {}
    for archive in stanza.get("archive", []):
        key = int(archive["database"]["repo-key"])
        low, high = wal.get(key, (None, None))
        low = min(filter(None, (low, archive.get("min"))), default=None)
        high = max(filter(None, (high, archive.get("max"))), default=None)
        wal[key] = (low, high)
    states = []
    for repo in stanza.get("repo", []):
        key = int(repo["key"])
        low, high = wal.get(key, (None, None))
        states.append(
            RepositoryState(
                repo=key,
                # Its first line: the rest can quote a damaged file's bytes.
                status=str(repo["status"]["message"]).splitlines()[0],
                backups=tuple(sorted(by_repo.get(key, []), key=lambda b: b.stopped)),
                wal_min=low,
                wal_max=high,
            )
        )
    return states


def repository_states(
    pgbackrest: PgBackRest, *, io_timeout: int | None = None
) -> list[RepositoryState]:
    """`io_timeout` bounds each of pgBackRest's reads: info makes four, each waiting up to
    io-timeout (default 60 s) for a store that is away, so a report on an unreachable
    backup.remote took 240 s."""
    # Console logging off: its lines would go to stdout, before the JSON.
    args = ["--log-level-console=off", "--output=json", "info"]
    if io_timeout is not None:
        args.insert(0, f"--io-timeout={io_timeout}")
    return parse_info(pgbackrest.run(args, what="info", timeout=300))


@dataclass(frozen=True)
class ArchiverState:
    """PostgreSQL's own view of archiving (`pg_stat_archiver`), and where its WAL is now."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_at: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_at: datetime | None
    current_wal: str
    checked_at: datetime

    @property
    def failing(self) -> bool:
        """The last attempt failed (a later success clears it)."""
        if self.last_failed_at is None:
            return False
        return self.last_archived_at is None or self.last_failed_at > self.last_archived_at

    @property
    def lag_seconds(self) -> float | None:
        """Seconds since the last segment reached the repository; None before the first."""
        if self.last_archived_at is None:
            return None
        return max(0.0, (self.checked_at - self.last_archived_at).total_seconds())


def _optional_time(value: str) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def archiver_state(executor: Executor) -> ArchiverState:
    """Read pg_stat_archiver (times in UTC) from the live server."""
    sql = (
        "SELECT archived_count, coalesce(last_archived_wal, ''), "
        "coalesce(to_char(last_archived_time AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00'), ''), failed_count, "
        "coalesce(last_failed_wal, ''), "
        "coalesce(to_char(last_failed_time AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00'), ''), "
        "pg_walfile_name(pg_current_wal_lsn()), "
        "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00') "
        "FROM pg_stat_archiver"
    )
    with psql_session(executor, executor.database) as session:
        row = session.query(sql)[0]
    return ArchiverState(
        archived_count=int(row[0]),
        last_archived_wal=row[1] or None,
        last_archived_at=_optional_time(row[2]),
        failed_count=int(row[3]),
        last_failed_wal=row[4] or None,
        last_failed_at=_optional_time(row[5]),
        current_wal=row[6],
        checked_at=datetime.fromisoformat(row[7]),
    )


@dataclass(frozen=True)
class RecoveryWindow:
    """The span a point-in-time restore can reach in one repository."""

    repo: int
    earliest: datetime
    latest: datetime

    def describe(self) -> str:
        return f"{self.earliest:%Y-%m-%d %H:%M:%S} to {self.latest:%Y-%m-%d %H:%M:%S} UTC"


def recovery_window(state: RepositoryState, archiver: ArchiverState) -> RecoveryWindow | None:
    """From the end of the oldest base backup to the last segment archived into this repository
    (pg_stat_archiver's time, when the repository holds that segment), or None without a
    base backup."""
    oldest, newest = state.oldest, state.newest
    if oldest is None or newest is None:
        return None
    latest = newest.stopped
    archived = archiver.last_archived_wal
    if (
        archiver.last_archived_at is not None
        and archived is not None
        and state.wal_max is not None
        and _segment_name(state.wal_max) >= _segment_name(archived)
    ):
        latest = max(latest, archiver.last_archived_at)
    # pgBackRest keeps whole seconds and wants a backup that stopped before the target.
    earliest = oldest.stopped + timedelta(seconds=1)
    return RecoveryWindow(state.repo, earliest, max(earliest, latest))


def _segment_name(wal: str) -> str:
    # A history file or a partial segment shares the segment's first 24 characters.
    return wal[:24]


def parse_target_time(text: str) -> datetime:
    """'YYYY-MM-DD HH:MM:SS[+TZ]' (UTC when no zone is given), as an aware datetime."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(
            f"{text!r} is not a time",
            hint="give it as 'YYYY-MM-DD HH:MM:SS' (UTC) or with a zone, e.g. '+02:00'",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_target(target: datetime, window: RecoveryWindow | None) -> None:
    """Refuse a time the repository cannot reach, naming what it can reach."""
    if window is None:
        raise DataError(
            "no base backup to recover from yet",
            hint="take one with `orbisctl backup create`",
        )
    if not window.earliest <= target <= window.latest:
        raise DataError(
            f"{target.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC is outside the recoverable window "
            f"of repository {window.repo}: {window.describe()}",
            hint="pick a time inside the window (`orbisctl backup status` shows it)",
        )


def restore_to_time(
    pgbackrest: PgBackRest, data_dir: str, target: datetime | None, *, repo: int = 1
) -> None:
    """Restore the cluster into the empty directory `data_dir`, set to recover up to `target`
    (the latest archived WAL when None) and then promote. Its archive_mode is off, so the
    scratch server a caller starts on it cannot push a new timeline into the repository
    before the caller decides to keep it."""
    args = [
        f"--repo={repo}",
        f"--pg1-path={data_dir}",
        "--archive-mode=off",
    ]
    if target is None:
        # To the end of the archived WAL; PostgreSQL promotes by itself there.
        args.append("--type=default")
    else:
        stamp = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        args += ["--type=time", f"--target={stamp}", "--target-action=promote"]
    pgbackrest.run([*args, "restore"], what="restore")
