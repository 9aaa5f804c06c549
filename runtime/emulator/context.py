"""What every session of one emulator shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from runtime.emulator.apikeys import ApiKeyFile
from runtime.emulator.scenario import Scenario
from runtime.emulator.settings import EmulatorSettings
from runtime.emulator.state import HandleStore, SessionLog, Stats


class Live(Protocol):
    """What the context needs of a live session (`session.LiveSession`): counted for the
    capacity, and ended when the emulator shuts down."""

    async def shutdown(self) -> None: ...


@dataclass
class EmulatorContext:
    """Everything sessions share; one per app, stored under an AppKey."""

    settings: EmulatorSettings
    scenarios: dict[str, Scenario]
    api_keys: ApiKeyFile
    handles: HandleStore
    stats: Stats
    session_log: SessionLog
    sessions: set[Live] = field(default_factory=set)
