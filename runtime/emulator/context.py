"""What every session of one emulator shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtime.emulator.apikeys import ApiKeyFile
from runtime.emulator.scenario import Scenario
from runtime.emulator.settings import EmulatorSettings
from runtime.emulator.state import HandleStore, SessionLog, Stats

if TYPE_CHECKING:  # the sessions hold the context: only the annotation names them
    from runtime.emulator.session import LiveSession


@dataclass
class EmulatorContext:
    """Everything sessions share; one per app, stored under an AppKey."""

    settings: EmulatorSettings
    scenarios: dict[str, Scenario]
    api_keys: ApiKeyFile
    handles: HandleStore
    stats: Stats
    session_log: SessionLog
    sessions: set[LiveSession] = field(default_factory=set)
