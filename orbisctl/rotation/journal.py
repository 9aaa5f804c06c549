"""The rotation journal and history: what a rotation has done, never the secrets themselves.

`<install>/rotation/journal.json` exists while a rotation is in progress (or was killed):
which secrets, which steps are done, and non-secret facts the steps recorded (fingerprints,
key ids, role names). It is rewritten atomically after every step change, so a process killed
at any point leaves a journal from which `--resume` or `--abort` can continue.

`<install>/rotation/history.jsonl` is the audit trail of finished rotations (who, what kind,
when, the outcome); `rotate-keys status` reads ages from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from orbisctl.core.errors import InstallDirError
from orbisctl.core.journaldir import JournalDir

ROTATION_DIRNAME = "rotation"
JOURNAL_VERSION = 1

StepStatus = Literal["pending", "started", "done", "undone"]
Mode = Literal["rotate", "abort"]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@dataclass
class StepRecord:
    kind: str
    name: str
    status: StepStatus = "pending"
    at: str | None = None


@dataclass
class Journal:
    id: str
    actor: str
    started_at: str
    kinds: list[str]
    steps: list[StepRecord]
    # Per secret kind: non-secret facts steps need on resume (fingerprints, key ids, roles).
    facts: dict[str, dict[str, str]] = field(default_factory=dict)
    mode: Mode = "rotate"
    version: int = JOURNAL_VERSION

    def facts_of(self, kind: str) -> dict[str, str]:
        return self.facts.setdefault(kind, {})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> Journal:
        try:
            data = json.loads(text)
            if data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"unknown journal version {data.get('version')!r}")
            data["steps"] = [StepRecord(**step) for step in data["steps"]]
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InstallDirError(
                f"the rotation journal {source} is unreadable: {exc}",
                hint="restore it from a backup, or inspect it by hand: it holds no secrets",
            ) from None


@dataclass(frozen=True)
class HistoryEntry:
    """One audit record: who rotated which secrets when, and how it ended (never values)."""

    id: str
    actor: str
    kinds: list[str]
    started_at: str
    finished_at: str
    outcome: Literal["completed", "aborted"]
    details: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEntry:
        return cls(**data)


@dataclass(frozen=True)
class JournalStore(JournalDir[Journal, HistoryEntry]):
    verb: ClassVar[str] = "rotate-keys"

    @classmethod
    def of_install(cls, install_dir: Path) -> JournalStore:
        return cls(install_dir / ROTATION_DIRNAME)

    def parse_journal(self, text: str, source: Path) -> Journal:
        return Journal.from_json(text, source=source)

    def parse_record(self, data: dict[str, Any]) -> HistoryEntry:
        return HistoryEntry.from_json(data)
