"""Start, resume, abort and report rotations: the functions `orbisctl rotate-keys` calls.

Each returns data for the command to print; none prints. The plan of a rotation is the
ordered steps of each chosen secret; it is fixed when the journal is written, so a resumed
run executes exactly the steps the first run planned.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from orbisctl.core.config import ModelProvider, OrbisConfig
from orbisctl.core.errors import InstallDirError, UserError
from orbisctl.core.progress import no_step
from orbisctl.core.secretfiles import read_gemini_key
from orbisctl.rotation.journal import (
    HistoryEntry,
    Journal,
    JournalStore,
    StepRecord,
    iso,
    parse_iso,
)
from orbisctl.rotation.steps import RotationContext, Step, StepRunner
from orbisctl.rotation.strategies import (
    ROTATION_ORDER,
    SECRET_FILES,
    SecretKind,
    jwt_keys_due,
    steps_for,
)
from runtime.api.settings import ApiSettings
from runtime.common.keyring import KeyRing

_GEMINI_KEY_FILE_FACT = "key_file"


class AuditSink(Protocol):
    def record(self, entry: HistoryEntry) -> None:
        """Keep an audit record of a finished rotation (never secret values)."""
        ...


@dataclass(frozen=True)
class PlannedStep:
    kind: str
    name: str
    summary: str


@dataclass(frozen=True)
class Outcome:
    rotation_id: str
    result: Literal["completed", "aborted"]
    kinds: list[str]
    steps_run: int


def install_context(install_dir: Path, config: OrbisConfig) -> RotationContext:
    """A context that can plan and report (and rotate host-only secrets): no stack ports."""
    return RotationContext(
        install_dir=install_dir.resolve(),
        config=config,
        jwt_max_token_lifetime=default_jwt_lifetime(),
    )


def actor() -> str:
    """Who is rotating: the login behind sudo when there is one, and the host."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def choose_kinds(
    ctx: RotationContext,
    requested: list[SecretKind],
    *,
    all_secrets: bool,
    gemini_key_file: Path | None,
) -> list[SecretKind]:
    """The kinds to rotate, in rotation order, plus `jwt_retire` first when keys are due."""
    chosen = set(requested)
    if all_secrets:
        chosen |= set(ROTATION_ORDER)
    if gemini_key_file is not None:
        chosen.add(SecretKind.GEMINI_API_KEY)
    kinds = [kind for kind in ROTATION_ORDER if kind in chosen]
    if (
        SecretKind.GEMINI_API_KEY in kinds
        and gemini_key_file is None
        and ctx.config.model.provider is ModelProvider.GEMINI
    ):
        raise UserError(
            "rotating the Gemini key needs the new key",
            hint="create a key in Google AI Studio, save it to a file (mode 0600) and pass "
            "--gemini-key-file FILE",
        )
    if gemini_key_file is not None:
        # Read now, not in the first step: a bad file is refused before the stack is
        # contacted or a journal exists (a refused rotation leaves nothing to --abort).
        read_gemini_key(gemini_key_file)
    if jwt_keys_due(ctx):
        kinds.insert(0, SecretKind.JWT_RETIRE)
    if not kinds:
        raise UserError(
            "nothing to rotate",
            hint="choose secrets (--jwt, --db-password, --redis-password, --internal-token, "
            "--backup-key, --gemini-key-file FILE) or --all",
        )
    return kinds


def _steps(
    ctx: RotationContext, kinds: list[SecretKind], key_file: Path | None
) -> dict[str, list[Step]]:
    return {kind.value: steps_for(kind, ctx, gemini_key_file=key_file) for kind in kinds}


def plan(
    ctx: RotationContext, kinds: list[SecretKind], *, gemini_key_file: Path | None = None
) -> list[PlannedStep]:
    """The steps a rotation of `kinds` would run; reads nothing it would change."""
    return [
        PlannedStep(kind, step.name, step.summary)
        for kind, items in _steps(ctx, kinds, gemini_key_file).items()
        for step in items
    ]


@contextmanager
def _locked(ctx: RotationContext) -> Iterator[JournalStore]:
    store = JournalStore.of_install(ctx.install_dir)
    with store.lock():
        yield store


OnStep = Callable[[str], None]


def _runner(
    ctx: RotationContext, store: JournalStore, journal: Journal, on_step: OnStep = no_step
) -> StepRunner:
    kinds = [SecretKind(kind) for kind in journal.kinds]
    fact = journal.facts.get(SecretKind.GEMINI_API_KEY.value, {}).get(_GEMINI_KEY_FILE_FACT)
    steps = _steps(ctx, kinds, Path(fact) if fact else None)
    return StepRunner(ctx, store, journal, steps, on_step=on_step)


def begin(
    ctx: RotationContext, kinds: list[SecretKind], *, gemini_key_file: Path | None = None
) -> Journal:
    """Write the journal of a new rotation (no step run yet); refuses while one is open."""
    store = JournalStore.of_install(ctx.install_dir)
    if store.load() is not None:
        raise InstallDirError(
            "a rotation is already in progress (it may have been interrupted)",
            hint="finish it with `orbisctl rotate-keys --resume` or roll it back with --abort",
        )
    # Every input is checked before the journal is written: a refusal leaves no rotation.
    if gemini_key_file is not None:
        read_gemini_key(gemini_key_file)
    missing = [
        SECRET_FILES[kind]
        for kind in kinds
        if kind in SECRET_FILES and not ctx.secrets.exists(SECRET_FILES[kind])
    ]
    if missing:
        raise InstallDirError(
            f"secret files missing from {ctx.secrets.directory}: {', '.join(missing)}",
            hint="run `orbisctl init` first; rotation replaces secrets, it does not create them",
        )
    now = ctx.now()
    steps = _steps(ctx, kinds, gemini_key_file)
    journal = Journal(
        id=f"r-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}",
        actor=actor(),
        started_at=iso(now),
        kinds=[kind.value for kind in kinds],
        steps=[StepRecord(kind, step.name) for kind, items in steps.items() for step in items],
    )
    if gemini_key_file is not None:
        journal.facts_of(SecretKind.GEMINI_API_KEY.value)[_GEMINI_KEY_FILE_FACT] = str(
            gemini_key_file.resolve()
        )
    store.save(journal)
    return journal


def open_runner(ctx: RotationContext, *, on_step: OnStep = no_step) -> StepRunner:
    """A runner for the journal in progress."""
    store = JournalStore.of_install(ctx.install_dir)
    journal = store.load()
    if journal is None:
        raise UserError(
            "no rotation is in progress", hint="`orbisctl rotate-keys status` shows the last ones"
        )
    return _runner(ctx, store, journal, on_step)


def _close(
    runner: StepRunner, result: Literal["completed", "aborted"], audit: AuditSink | None
) -> None:
    journal = runner.journal
    entry = HistoryEntry(
        id=journal.id,
        actor=journal.actor,
        kinds=journal.kinds,
        started_at=journal.started_at,
        finished_at=iso(runner.ctx.now()),
        outcome=result,
        details={
            kind: {k: v for k, v in facts.items() if k != _GEMINI_KEY_FILE_FACT}
            for kind, facts in journal.facts.items()
        },
    )
    runner.on_step("record the rotation in the history" + (" and the audit log" if audit else ""))
    # The audit entry first: when it cannot be written, the journal stays and `--resume`
    # (no step left to run) writes it, without a second history line.
    if audit is not None:
        audit.record(entry)
    runner.store.append_history(entry)
    runner.store.remove()


def finish_forward(runner: StepRunner, audit: AuditSink | None) -> Outcome:
    """Run the remaining steps; the journal is closed into the history when all are done."""
    if runner.journal.mode == "abort":
        return finish_abort(runner, audit)
    count = 0
    while runner.run_next() is not None:
        count += 1
    _close(runner, "completed", audit)
    return Outcome(runner.journal.id, "completed", runner.journal.kinds, count)


def finish_abort(runner: StepRunner, audit: AuditSink | None) -> Outcome:
    """Undo every step that began, newest first, then close the journal as aborted."""
    blocker = runner.undo_blocker()
    if blocker is not None:
        raise UserError(
            f"{blocker.kind} is past the point of no return ({blocker.name}): it cannot be "
            "rolled back",
            hint="finish it with `orbisctl rotate-keys --resume`",
        )
    if runner.journal.mode != "abort":
        runner.journal.mode = "abort"
        runner.store.save(runner.journal)
    count = 0
    while runner.undo_next() is not None:
        count += 1
    _close(runner, "aborted", audit)
    return Outcome(runner.journal.id, "aborted", runner.journal.kinds, count)


def rotate(
    ctx: RotationContext,
    kinds: list[SecretKind],
    *,
    gemini_key_file: Path | None = None,
    audit: AuditSink | None = None,
    on_step: OnStep = no_step,
) -> Outcome:
    """Run a new rotation to its end. The history file is the local record; `audit` is the
    API's audit log (`compose.ExecApiAudit`) when the stack runs. `on_step` is told each
    step as it begins."""
    with _locked(ctx) as store:
        journal = begin(ctx, kinds, gemini_key_file=gemini_key_file)
        return finish_forward(_runner(ctx, store, journal, on_step), audit)


def resume(
    ctx: RotationContext, *, audit: AuditSink | None = None, on_step: OnStep = no_step
) -> Outcome:
    """Continue the interrupted rotation in the direction it was going."""
    with _locked(ctx) as store:
        journal = store.load()
        if journal is None:
            due = [SecretKind.JWT_RETIRE] if jwt_keys_due(ctx) else []
            if not due:
                raise UserError("no rotation is in progress and no JWT key is due to be dropped")
            return finish_forward(_runner(ctx, store, begin(ctx, due), on_step), audit)
        return finish_forward(_runner(ctx, store, journal, on_step), audit)


def abort(
    ctx: RotationContext, *, audit: AuditSink | None = None, on_step: OnStep = no_step
) -> Outcome:
    with _locked(ctx):
        return finish_abort(open_runner(ctx, on_step=on_step), audit)


# --- status -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretStatus:
    kind: str
    file: str
    present: bool
    last_rotated: str | None  # ISO time of the last completed rotation
    since: str | None  # the age is counted from here: last rotation, or the file's creation
    age_days: int | None
    max_age_days: int
    overdue: bool


@dataclass(frozen=True)
class PendingKeyDrop:
    kid: str
    due_at: str
    due: bool


@dataclass(frozen=True)
class RotationStatus:
    secrets: list[SecretStatus]
    jwt_drops: list[PendingKeyDrop]
    in_progress: Journal | None


def _file_time(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime).astimezone()


def status(ctx: RotationContext) -> RotationStatus:
    store = JournalStore.of_install(ctx.install_dir)
    last: dict[str, str] = {}
    for entry in store.history():
        if entry.outcome == "completed":
            for kind in entry.kinds:
                last[kind] = max(last.get(kind, entry.finished_at), entry.finished_at)
    now = ctx.now()
    max_age = ctx.config.rotation.max_age_days
    rows = []
    for kind in ROTATION_ORDER:
        name = SECRET_FILES[kind]
        path = ctx.secrets.path(name)
        present = path.is_file()
        since: datetime | None = None
        if kind.value in last:
            since = parse_iso(last[kind.value])
        elif present:
            since = _file_time(path)
        age = (now - since).days if since else None
        rows.append(
            SecretStatus(
                kind=kind.value,
                file=name,
                present=present,
                last_rotated=last.get(kind.value),
                since=iso(since) if since else None,
                age_days=age,
                max_age_days=max_age,
                overdue=age is not None and age > max_age,
            )
        )
    return RotationStatus(rows, _jwt_drops(ctx, now), store.load())


def _jwt_drops(ctx: RotationContext, now: datetime) -> list[PendingKeyDrop]:
    path = ctx.secrets.path(SECRET_FILES[SecretKind.JWT])
    if not path.is_file():
        return []
    drops = []
    for key in KeyRing.load(path).keys:
        if key.use != "verify":
            continue
        due_at = (key.retired_at or key.created_at) + ctx.jwt_max_token_lifetime
        drops.append(PendingKeyDrop(key.kid, iso(due_at), due_at <= now))
    return drops


def default_jwt_lifetime() -> timedelta:
    """The API's access-token lifetime: the longest-lived JWT it signs (refresh tokens are
    opaque database rows, not JWTs)."""
    return timedelta(seconds=ApiSettings.model_fields["access_token_seconds"].default)
