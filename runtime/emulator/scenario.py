"""Scenarios: what the emulated model answers, turn by turn, and which failures it injects.

A scenario file is YAML in one of three shapes:

* a list of turns (replaces the default scenario);
* a mapping with `turns:` and optionally `faults:`, `chunk_ms:`, `pace:` (replaces the default);
* `scenarios: {name: <scenario>, ...}`: named scenarios added to the built-in ones (`default`,
  `echo`, `weather`); a session picks one with the control keyword (see `parse_control`).

Turns are played in order and cycle. The turn counter is absolute (it does not wrap), survives
session resumption, and is what per-lineage fault bookkeeping is keyed on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MS_PER_CHARACTER = 60  # roughly the pace of synthetic speech for a transcription of that length
MAX_AUDIO_MS = 60_000


class ScenarioError(ValueError):
    """A scenario file or control keyword that cannot be used; the message says what is wrong."""


class Faults(BaseModel):
    """Failures the real service is known for, injectable per scenario, session or turn.

    Each fault fires at most once per turn of a session lineage (a session and its resumptions),
    so a resumed session that replays the same turn gets the healthy answer.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=120_000)
    close_1011_mid_turn: bool = False
    premature_turn_complete: bool = False
    silence_after_tool_response: bool = False
    duplicate_tool_call: bool = False
    idless_tool_call: bool = False
    cancel_tool_call: bool = False
    interrupt: Literal["before_turn_complete", "after_turn_complete"] | None = None
    fragment_transcriptions: bool = False
    refuse_resume_while_open: bool = False

    def merged(self, override: Faults | None) -> Faults:
        """This set with the fields the override explicitly sets taking precedence."""
        if override is None:
            return self
        values = self.model_dump()
        values.update({name: getattr(override, name) for name in override.model_fields_set})
        return Faults.model_validate(values)


class Reply(BaseModel):
    """Something the model says: audio of a length, and its transcription (fragments if a list)."""

    model_config = ConfigDict(extra="forbid")

    output_transcription: str | list[str] = ""
    audio_ms: int | None = Field(default=None, ge=0, le=MAX_AUDIO_MS)
    audio_kind: Literal["tone", "noise"] = "tone"
    frequency: float = Field(default=440.0, gt=0, lt=12_000)
    echo: bool = False  # the reply lasts as long as the user's input

    def is_empty(self) -> bool:
        return not self.text_fragments() and not self.audio_ms and not self.echo

    def text_fragments(self) -> list[str]:
        value = self.output_transcription
        fragments = value if isinstance(value, list) else [value]
        return [fragment for fragment in fragments if fragment]

    def duration_ms(self, input_ms: float) -> int:
        if self.echo:
            return min(int(input_ms), MAX_AUDIO_MS)
        if self.audio_ms is not None:
            return self.audio_ms
        return min(len("".join(self.text_fragments())) * MS_PER_CHARACTER, MAX_AUDIO_MS)


class ToolCallSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None  # None: the first function the session declared
    args: dict[str, Any] = Field(default_factory=dict)


class Turn(Reply):
    """One user turn and the model's answer to it.

    With a `tool_call`, whatever the turn itself says is spoken first (a "let me check"), then
    the call is made, and `after_tool` is spoken once the tool response arrives.
    """

    input_transcription: str | list[str] | None = None
    tool_call: ToolCallSpec | None = None
    after_tool: Reply = Field(default_factory=lambda: Reply(output_transcription="Done."))
    faults: Faults | None = None


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turns: list[Turn] = Field(min_length=1)
    faults: Faults = Field(default_factory=Faults)
    chunk_ms: int = Field(default=100, ge=10, le=1000)
    pace: float = Field(default=0.0, ge=0.0, le=10.0)  # 0: as fast as possible; 1: real time

    def turn(self, index: int) -> Turn:
        return self.turns[index % len(self.turns)]


BUILTIN_SCENARIOS: dict[str, Scenario] = {
    "default": Scenario(
        turns=[
            Turn(
                input_transcription="Hello there.",
                output_transcription=["Hi! ", "How can I help?"],
                audio_ms=1200,
            )
        ]
    ),
    "echo": Scenario(
        turns=[
            Turn(
                input_transcription="({input_seconds} s of audio)",
                output_transcription="You spoke for {input_seconds} seconds.",
                echo=True,
            )
        ]
    ),
    "weather": Scenario(
        turns=[
            Turn(
                input_transcription="What's the weather in Paris?",
                tool_call=ToolCallSpec(args={"city": "Paris"}),
                after_tool=Reply(output_transcription="Here is the weather: {tool_response}"),
            )
        ]
    ),
}


def _validated(raw: object, where: str) -> Scenario:
    try:
        return Scenario.model_validate({"turns": raw} if isinstance(raw, list) else raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ScenarioError(f"{where}: {location}: {first['msg']}") from exc


def load_scenarios(path: Path | None) -> dict[str, Scenario]:
    """The built-in scenarios, with those from the file (if any) added or replacing them."""
    scenarios = dict(BUILTIN_SCENARIOS)
    if path is None:
        return scenarios
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario file {path} is not valid YAML: {exc}") from exc
    if isinstance(raw, dict) and "scenarios" in raw:
        named = raw["scenarios"]
        if not isinstance(named, dict) or not named:
            raise ScenarioError(f"{path}: `scenarios` must map names to scenarios")
        for name, body in named.items():
            scenarios[str(name)] = _validated(body, f"{path}: scenarios.{name}")
    else:
        scenarios["default"] = _validated(raw, str(path))
    return scenarios


class Control(BaseModel):
    """Per-session choices carried by the control keyword in the system instruction."""

    model_config = ConfigDict(extra="forbid")

    scenario: str = "default"
    faults: Faults | None = None
    cap_s: float | None = Field(default=None, gt=0)
    go_away_s: float | None = Field(default=None, ge=0)


_CONTROL = re.compile(r"\[\[emulator\b([^\]]*)\]\]")
_CONTROL_KEYS = {"scenario", "cap_s", "go_away_s"}


def parse_control(text: str) -> Control:
    """Read `[[emulator scenario=NAME cap_s=5 go_away_s=2 FAULT FAULT=VALUE ...]]` from text.

    Bare fault names switch a fault on; `latency_ms=300`, `interrupt=after_turn_complete` set
    values. Without a keyword the session gets the default scenario and no extra faults.
    """
    match = _CONTROL.search(text)
    if match is None:
        return Control()
    options: dict[str, str] = {}
    fault_values: dict[str, object] = {}
    for token in match.group(1).split():
        key, _, value = token.partition("=")
        if key in _CONTROL_KEYS:
            options[key] = value
        else:
            fault_values[key] = value if value else True
    try:
        faults = Faults.model_validate(fault_values) if fault_values else None
        return Control.model_validate({**options, "faults": faults})
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise ScenarioError(f"emulator control keyword: {location}: {first['msg']}") from exc
