"""The upgrade journal and history: what an upgrade has done, so a killed one resumes or rolls
back, and what past upgrades did.

`<install>/upgrade/journal.json` exists while an upgrade (or its rollback) is in progress or
was killed; it is rewritten atomically after every step change. `<install>/upgrade/previous/`
keeps the orbis.yaml the install ran before, for the rollback. `<install>/upgrade/history.jsonl`
is the audit trail `status` shows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from orbisctl.core.errors import InstallDirError
from orbisctl.core.fsutil import atomic_write
from orbisctl.core.journaldir import JournalDir
from orbisctl.rotation.journal import StepRecord

UPGRADE_DIRNAME = "upgrade"
JOURNAL_VERSION = 1

Mode = Literal["upgrade", "rollback"]
Outcome = Literal["upgraded", "rolled back", "rollback failed"]


@dataclass(frozen=True)
class StepTiming:
    """When a step began (epoch seconds) and how long it took: `upgrade --history` shows them."""

    kind: str  # "upgrade" or "rollback"
    name: str
    started: float
    seconds: float


@dataclass
class UpgradeJournal:
    id: str
    actor: str
    started_at: str
    from_version: str  # the images.tag the install ran
    to_version: str
    steps: list[StepRecord]
    mode: Mode = "upgrade"
    # Non-secret facts steps record for the ones after them and for a resume: the
    # pre-upgrade backup, the schema before and after, why the upgrade failed.
    facts: dict[str, str] = field(default_factory=dict)
    timings: list[StepTiming] = field(default_factory=list)
    version: int = JOURNAL_VERSION

    def forward_done(self, step: str) -> bool:
        """Whether the forward step `step` finished before the upgrade turned back."""
        return step in self.facts.get("forward_done", "").split(",")

    def forward_begun(self, step: str) -> bool:
        """Whether the forward step `step` had begun (maybe not finished) before turning back."""
        return step in self.facts.get("forward_begun", "").split(",")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> UpgradeJournal:
        try:
            data = json.loads(text)
            if data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"unknown journal version {data.get('version')!r}")
            data["steps"] = [StepRecord(**step) for step in data["steps"]]
            data["timings"] = [StepTiming(**item) for item in data.get("timings", [])]
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InstallDirError(
                f"the upgrade journal {source} is unreadable: {exc}",
                hint="inspect it by hand (it holds no secrets); `orbisctl version` shows what runs",
            ) from None


@dataclass(frozen=True)
class UpgradeRecord:
    """One finished upgrade or rollback, for `status` and the audit trail."""

    id: str
    actor: str
    from_version: str
    to_version: str
    started_at: str
    finished_at: str
    outcome: Outcome
    detail: str = ""
    timings: list[StepTiming] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return round(sum(timing.seconds for timing in self.timings), 1)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpgradeRecord:
        fields = {key: value for key, value in data.items() if key != "timings"}
        return cls(**fields, timings=[StepTiming(**item) for item in data.get("timings", [])])


@dataclass(frozen=True)
class UpgradeStore(JournalDir[UpgradeJournal, UpgradeRecord]):
    verb: ClassVar[str] = "upgrade"

    @classmethod
    def of_install(cls, install_dir: Path) -> UpgradeStore:
        return cls(install_dir / UPGRADE_DIRNAME)

    def parse_journal(self, text: str, source: Path) -> UpgradeJournal:
        return UpgradeJournal.from_json(text, source=source)

    def parse_record(self, data: dict[str, Any]) -> UpgradeRecord:
        return UpgradeRecord.from_json(data)

    @property
    def previous_config(self) -> Path:
        return self.directory / "previous" / "orbis.yaml"

    def keep_previous_config(self, data: bytes) -> None:
        self.previous_config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.previous_config, data, mode=0o600)
