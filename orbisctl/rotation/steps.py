"""Steps, the context they run in, and the step runner that journals them.

A rotation is a list of steps per secret. Each step is idempotent (running it again after a
kill mid-way has the same end result) and, until the point of no return, has an `undo` that
is idempotent too. The runner marks a step `started` before running it and `done` after, and
saves the journal each time, so a killed process leaves enough to resume or roll back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import InstallDirError, OrbisError
from orbisctl.core.progress import no_step
from orbisctl.rotation.journal import Journal, JournalStore, StepRecord, StepStatus, iso
from orbisctl.rotation.ports import GeminiProbe, PostgresAdmin, RedisAdmin, ServiceRoller
from orbisctl.rotation.secretfiles import SecretStore, fingerprint


class RotationFailed(OrbisError):
    """A rotation step could not complete; the journal keeps the rotation resumable."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(
            message,
            hint or "fix the cause, then `orbisctl rotate-keys --resume` (or --abort to roll back)",
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RotationContext:
    """Everything steps touch. Ports left as None are checked when a step needs them."""

    install_dir: Path
    config: OrbisConfig
    roller: ServiceRoller | None = None
    postgres: PostgresAdmin | None = None
    redis: RedisAdmin | None = None
    gemini: GeminiProbe | None = None
    # The longest lifetime of any JWT the API signs: verify-only keys are kept this long.
    jwt_max_token_lifetime: timedelta = timedelta(days=1)
    now: Callable[[], datetime] = _utc_now
    secrets: SecretStore = field(init=False)

    def __post_init__(self) -> None:
        self.secrets = SecretStore.of_install(self.install_dir)

    def need_roller(self) -> ServiceRoller:
        if self.roller is None:
            raise RotationFailed("no connection to the running stack to restart services with")
        return self.roller

    def need_postgres(self) -> PostgresAdmin:
        if self.postgres is None:
            raise RotationFailed("no PostgreSQL administration connection is configured")
        return self.postgres

    def need_redis(self) -> RedisAdmin:
        if self.redis is None:
            raise RotationFailed("no Redis administration connection is configured")
        return self.redis

    def need_gemini(self) -> GeminiProbe:
        if self.gemini is None:
            raise RotationFailed("no Gemini endpoint is configured to validate keys against")
        return self.gemini


@dataclass
class StepEnv:
    """What one step sees: the context, its secret kind's facts, and a way to save them."""

    ctx: RotationContext
    facts: dict[str, str]
    checkpoint: Callable[[], None]

    @property
    def secrets(self) -> SecretStore:
        return self.ctx.secrets


StepAction = Callable[[StepEnv], None]


@dataclass(frozen=True)
class Step:
    name: str
    summary: str
    apply: StepAction
    undo: StepAction | None = None
    # False from the point of no return on (old values forgotten): --abort is refused then.
    reversible: bool = True


def staged_value(env: StepEnv, secret: str, *, which: str) -> str:
    """The staged new (`which="new"`) or previous value, checked against the journal."""
    text = env.secrets.staged_next(secret) if which == "new" else env.secrets.staged_prev(secret)
    expected = env.facts.get(which)
    if text is None or expected is None or fingerprint(text) != expected:
        raise InstallDirError(
            f"the staged {which} value of secret {secret} is missing or changed since the "
            "rotation began",
            hint="restore secrets/ from a backup; the journal holds only fingerprints",
        )
    return text


class StepRunner:
    """Runs (or undoes) the steps of one journal, one at a time, saving after each change."""

    def __init__(
        self,
        ctx: RotationContext,
        store: JournalStore,
        journal: Journal,
        steps: dict[str, list[Step]],
        *,
        on_step: Callable[[str], None] = no_step,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.journal = journal
        # Told each step's secret and summary as the step begins (the command shows them).
        self.on_step = on_step
        self._steps = {(kind, step.name): step for kind, items in steps.items() for step in items}
        missing = [
            f"{record.kind}/{record.name}"
            for record in journal.steps
            if (record.kind, record.name) not in self._steps
        ]
        if missing:
            raise InstallDirError(
                f"the rotation journal names steps this orbisctl does not know: {missing}",
                hint="finish it with the orbisctl version that started it",
            )

    def _env(self, kind: str) -> StepEnv:
        return StepEnv(self.ctx, self.journal.facts_of(kind), self._save)

    def _save(self) -> None:
        self.store.save(self.journal)

    def _mark(self, record: StepRecord, status: StepStatus) -> None:
        record.status = status
        record.at = iso(self.ctx.now())
        self._save()

    def pending(self) -> list[StepRecord]:
        return [record for record in self.journal.steps if record.status != "done"]

    def step_of(self, record: StepRecord) -> Step:
        return self._steps[(record.kind, record.name)]

    def run_next(self) -> StepRecord | None:
        """Run the first step not done yet; None when every step is done."""
        record = next((item for item in self.journal.steps if item.status != "done"), None)
        if record is None:
            return None
        step = self.step_of(record)
        self.on_step(f"{record.kind}: {step.summary}")
        self._mark(record, "started")
        step.apply(self._env(record.kind))
        self._mark(record, "done")
        return record

    def undo_blocker(self) -> StepRecord | None:
        """The first step past the point of no return that has begun, if any."""
        return next(
            (
                record
                for record in self.journal.steps
                if record.status in ("started", "done") and not self.step_of(record).reversible
            ),
            None,
        )

    def undo_next(self) -> StepRecord | None:
        """Undo the last step that began; None when nothing is left to undo."""
        record = next(
            (item for item in reversed(self.journal.steps) if item.status in ("started", "done")),
            None,
        )
        if record is None:
            return None
        step = self.step_of(record)
        self.on_step(f"{record.kind}: undo: {step.summary}")
        if step.undo is not None:
            step.undo(self._env(record.kind))
        self._mark(record, "undone")
        return record
