"""Process-wide emulator state: counters, session resumption handles, recent session records."""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.emulator.scenario import Faults

MAX_RECORDED_PAYLOAD_CHARS = 2000
MAX_RECORDED_ITEMS = 50


@dataclass
class Stats:
    sessions_open: int = 0
    sessions_total: int = 0
    sessions_resumed: int = 0
    sessions_refused: int = 0
    messages_in: int = 0
    messages_out: int = 0
    audio_bytes_in: int = 0
    audio_bytes_out: int = 0
    turns: int = 0
    tool_calls: int = 0
    tool_responses: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    faults_fired: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        # Not asdict(): it rebuilds a Counter from (key, value) pairs, counting the pairs.
        return {
            name: dict(value) if isinstance(value, Counter) else value
            for name, value in vars(self).items()
        }


@dataclass
class Lineage:
    """A session and all its resumptions: the faults it has already suffered, per turn."""

    id: str = field(default_factory=lambda: secrets.token_hex(6))
    fired: set[tuple[int, str]] = field(default_factory=set)
    open_sessions: int = 0

    def fire_once(self, turn: int, fault: str) -> bool:
        """True the first time this fault is due on this turn of the lineage."""
        if (turn, fault) in self.fired:
            return False
        self.fired.add((turn, fault))
        return True


@dataclass(frozen=True)
class Snapshot:
    """What a resumption handle restores: where in which scenario the session was."""

    lineage: Lineage
    scenario: str
    session_faults: Faults | None
    next_turn: int
    cap_s: float | None
    go_away_s: float | None


class HandleStore:
    """Resumption handles, valid for a time-to-live (2 h like the real service), bounded in count."""

    def __init__(self, *, ttl_seconds: float, max_handles: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_handles
        self._handles: OrderedDict[str, tuple[float, Snapshot]] = OrderedDict()

    def issue(self, snapshot: Snapshot) -> str:
        handle = "Cj0K" + secrets.token_urlsafe(24)
        self._handles[handle] = (time.monotonic() + self._ttl, snapshot)
        while len(self._handles) > self._max:
            self._handles.popitem(last=False)
        return handle

    def get(self, handle: str) -> Snapshot | None:
        entry = self._handles.get(handle)
        if entry is None:
            return None
        expires, snapshot = entry
        if time.monotonic() > expires:
            del self._handles[handle]
            return None
        return snapshot

    def __len__(self) -> int:
        return len(self._handles)


def _clipped(value: object) -> object:
    """A payload as recorded for inspection: kept as is when small, else a clipped string."""
    text = repr(value)
    return value if len(text) <= MAX_RECORDED_PAYLOAD_CHARS else text[:MAX_RECORDED_PAYLOAD_CHARS]


@dataclass
class SessionRecord:
    """What one connection saw, for tests and operators to inspect through GET /sessions."""

    id: str
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    model: str | None = None
    scenario: str | None = None
    lineage: str | None = None
    resumed: bool = False
    system_instruction: str = ""
    declared_functions: list[str] = field(default_factory=list)
    turns: int = 0
    audio_bytes_in: int = 0
    audio_bytes_out: int = 0
    text_inputs: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_responses: list[dict[str, Any]] = field(default_factory=list)
    faults_fired: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str | None = None

    def add_tool_response(self, call_id: str | None, name: str | None, response: object) -> None:
        append_bounded(
            self.tool_responses, {"id": call_id, "name": name, "response": _clipped(response)}
        )

    def as_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["system_instruction"] = self.system_instruction[:MAX_RECORDED_PAYLOAD_CHARS]
        record["text_inputs"] = [text[:MAX_RECORDED_PAYLOAD_CHARS] for text in self.text_inputs]
        return record


class SessionLog:
    """The last N session records (open ones included), newest last."""

    def __init__(self, keep: int) -> None:
        self._records: deque[SessionRecord] = deque(maxlen=keep)

    def add(self, record: SessionRecord) -> None:
        self._records.append(record)

    def as_json(self) -> list[dict[str, Any]]:
        return [record.as_json() for record in self._records]


def append_bounded(items: list[Any], item: Any) -> None:
    """Keep a record's list at MAX_RECORDED_ITEMS: a long session does not grow it forever."""
    if len(items) < MAX_RECORDED_ITEMS:
        items.append(item)
