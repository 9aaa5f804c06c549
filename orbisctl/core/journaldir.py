"""A directory holding one verb's journal and history: `rotate-keys` and `upgrade` keep theirs
the same way (the journal rewritten atomically after every step, the history append-only, one
run at a time per install under a lock the OS frees when the holder dies)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from orbisctl.core.errors import InstallDirError
from orbisctl.core.fsutil import append_json_line, atomic_write, exclusive_lock, read_json_lines


class Journaled(Protocol):
    def to_json(self) -> str: ...


JournalT = TypeVar("JournalT", bound=Journaled)
RecordT = TypeVar("RecordT")


@dataclass(frozen=True)
class JournalDir(Generic[JournalT, RecordT]):
    directory: Path
    # The command whose runs this directory records (named in the lock's error).
    verb: ClassVar[str] = ""

    def parse_journal(self, text: str, source: Path) -> JournalT:
        raise NotImplementedError

    def parse_record(self, data: dict[str, Any]) -> RecordT:
        raise NotImplementedError

    @property
    def journal_path(self) -> Path:
        return self.directory / "journal.json"

    @property
    def history_path(self) -> Path:
        return self.directory / "history.jsonl"

    def load(self) -> JournalT | None:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return self.parse_journal(text, self.journal_path)

    def save(self, journal: JournalT) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.journal_path, journal.to_json().encode(), mode=0o600)

    def remove(self) -> None:
        self.journal_path.unlink(missing_ok=True)

    def append_history(self, record: RecordT) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        append_json_line(self.history_path, asdict(record))  # type: ignore[call-overload]

    def history(self) -> list[RecordT]:
        records = []
        for data in read_json_lines(self.history_path):
            with suppress(TypeError):
                records.append(self.parse_record(data))
        return records

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        busy = InstallDirError(
            f"another `orbisctl {self.verb}` is running on this install",
            hint="wait for it to finish; if it was killed, the lock frees itself",
        )
        with exclusive_lock(self.directory / "lock", busy):
            yield
