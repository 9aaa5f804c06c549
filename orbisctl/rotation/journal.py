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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from orbisctl.core.errors import InstallDirError
from orbisctl.core.fsutil import append_json_line, atomic_write, exclusive_lock, read_json_lines
from orbisctl.rotation.secretfiles import SECRET_MODE

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
class JournalStore:
    directory: Path

    @classmethod
    def of_install(cls, install_dir: Path) -> JournalStore:
        return cls(install_dir / ROTATION_DIRNAME)

    @property
    def journal_path(self) -> Path:
        return self.directory / "journal.json"

    @property
    def history_path(self) -> Path:
        return self.directory / "history.jsonl"

    def load(self) -> Journal | None:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return Journal.from_json(text, source=self.journal_path)

    def save(self, journal: Journal) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.journal_path, journal.to_json().encode(), mode=SECRET_MODE)

    def remove(self) -> None:
        self.journal_path.unlink(missing_ok=True)

    def append_history(self, entry: HistoryEntry) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        append_json_line(self.history_path, asdict(entry))

    def history(self) -> list[HistoryEntry]:
        entries = []
        for record in read_json_lines(self.history_path):
            with suppress(TypeError):
                entries.append(HistoryEntry.from_json(record))
        return entries

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One rotation at a time per install; the OS releases the lock if we are killed."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        busy = InstallDirError(
            "another `orbisctl rotate-keys` is running on this install",
            hint="wait for it to finish; if it was killed, the lock frees itself",
        )
        with exclusive_lock(self.directory / "lock", busy):
            yield
