"""Continuous archiving in the compose stack: pgBackRest inside the postgres container.

The container has pgBackRest's configuration at its default place (the install's rendered
`pgbackrest/`) and the secret half in the include directory its environment names, so every
command here is a bare `pgbackrest` through `docker compose exec -T postgres`, and the server's
own archive_command is the same program. `up` creates the stanza; `backup create` takes a base
backup (full every `backup.archive.full_every_days`, differential in between); `backup status`
reads what each repository can recover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backups import archive
from backups.archive import (
    ArchiverState,
    BackupKind,
    PgBackRest,
    RecoveryWindow,
    RepositoryState,
)
from backups.executor import Executor
from orbisctl.core.install import Install
from orbisctl.core.progress import NO_PROGRESS, Progress

POSTGRES_SERVICE = "postgres"
LOCAL_REPOSITORY = 1


def stack_pgbackrest(install: Install) -> PgBackRest:
    """pgBackRest in the install's running postgres container."""
    return PgBackRest(prefix=tuple(install.compose().exec_command(POSTGRES_SERVICE, [])))


def ensure_stanza(install: Install) -> None:
    """Create the stanza in every repository, or check the existing one (idempotent)."""
    archive.create_stanza(stack_pgbackrest(install))


def next_kind(state: RepositoryState | None, *, full_every: timedelta, now: datetime) -> BackupKind:
    """A full backup when the repository has none or its newest full is `full_every` old;
    else a differential one (it needs only that full and the WAL after it)."""
    fulls = [b for b in state.backups if b.kind is BackupKind.FULL] if state else []
    if not fulls or now - fulls[-1].started >= full_every:
        return BackupKind.FULL
    return BackupKind.DIFFERENTIAL


@dataclass(frozen=True)
class BaseBackupResult:
    repo: int
    kind: BackupKind
    label: str
    seconds: float


def take_base_backups(
    install: Install, *, progress: Progress = NO_PROGRESS
) -> list[BaseBackupResult]:
    """The scheduled base backup into each repository (local first, then backup.remote),
    its kind by that repository's own fulls; expired ones go after each."""
    pgbackrest = stack_pgbackrest(install)
    full_every = timedelta(days=install.config.backup.archive.full_every_days)
    results = []
    for state in archive.repository_states(pgbackrest):
        kind = next_kind(state, full_every=full_every, now=datetime.now(UTC))
        progress.step(f"pgBackRest: {kind.value} base backup into repository {state.repo}")
        started = time.monotonic()
        archive.base_backup(pgbackrest, kind, repo=state.repo)
        seconds = time.monotonic() - started
        results.append(BaseBackupResult(state.repo, kind, "", seconds))
    labels = {s.repo: s.newest.label for s in archive.repository_states(pgbackrest) if s.newest}
    return [BaseBackupResult(r.repo, r.kind, labels.get(r.repo, ""), r.seconds) for r in results]


def verify_repositories(install: Install, *, progress: Progress = NO_PROGRESS) -> list[int]:
    """`pgbackrest verify` of every repository the stack archives into; the numbers checked.
    A file that fails its checksum is a DataError naming it."""
    pgbackrest = stack_pgbackrest(install)
    repos = [state.repo for state in archive.repository_states(pgbackrest)]
    for repo in repos:
        progress.step(f"pgBackRest: verify repository {repo}")
        archive.verify_repository(pgbackrest, repo=repo)
    return repos


@dataclass(frozen=True)
class RepositoryReport:
    state: RepositoryState
    window: RecoveryWindow | None

    def to_json(self) -> dict[str, Any]:
        newest = self.state.newest
        return {
            **self.state.to_json(),
            "window": None
            if self.window is None
            else {
                "earliest": self.window.earliest.isoformat(),
                "latest": self.window.latest.isoformat(),
            },
            "last_base_backup": None
            if newest is None
            else {
                "label": newest.label,
                "type": newest.kind.value,
                "stopped": newest.stopped.isoformat(),
            },
        }


@dataclass(frozen=True)
class ArchiveReport:
    """What `backup status` shows: PostgreSQL's archiver and each repository."""

    archiver: ArchiverState
    repositories: list[RepositoryReport]

    def to_json(self) -> dict[str, Any]:
        archiver = self.archiver
        return {
            "archiver": {
                "archived_count": archiver.archived_count,
                "last_archived_wal": archiver.last_archived_wal,
                "last_archived_at": _iso(archiver.last_archived_at),
                "failed_count": archiver.failed_count,
                "last_failed_wal": archiver.last_failed_wal,
                "last_failed_at": _iso(archiver.last_failed_at),
                "failing": archiver.failing,
                "current_wal": archiver.current_wal,
                "lag_seconds": None
                if archiver.lag_seconds is None
                else round(archiver.lag_seconds, 1),
            },
            "repositories": [repo.to_json() for repo in self.repositories],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def archive_report(pgbackrest: PgBackRest, executor: Executor) -> ArchiveReport:
    """Read pg_stat_archiver (through `executor`) and `pgbackrest info`: for the running stack,
    `stack_pgbackrest(install)` and its ComposeExecutor."""
    archiver = archive.archiver_state(executor)
    states = archive.repository_states(pgbackrest)
    return ArchiveReport(
        archiver,
        [RepositoryReport(state, archive.recovery_window(state, archiver)) for state in states],
    )
