"""Admitting a session once its setup arrives: key, capacity, setup, model, resumption handle
and scenario, checked in the order the real service refuses them."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.emulator import wire
from runtime.emulator.closes import (
    CLOSE_INTERNAL,
    CLOSE_INVALID_ARGUMENT,
    CLOSE_POLICY,
    REASON_BAD_HANDLE,
    REASON_BAD_KEY,
    REASON_EXHAUSTED,
    REASON_INTERNAL,
)
from runtime.emulator.context import EmulatorContext
from runtime.emulator.scenario import Control, Faults, Scenario, ScenarioError, parse_control
from runtime.emulator.state import Lineage, SessionRecord, Snapshot, append_bounded


@dataclass(frozen=True)
class Refused:
    """The close that answers the setup."""

    code: int
    reason: str


@dataclass(frozen=True)
class Admitted:
    """What an accepted setup starts the session with (a resumption: where its lineage was)."""

    setup: wire.SetupRequest
    scenario_name: str
    scenario: Scenario
    control: Control
    lineage: Lineage
    next_turn: int


def admit(
    context: EmulatorContext,
    body: wire.JsonObject,
    record: SessionRecord,
    *,
    api_key: str | None,
    api_version: str,
    open_sessions: int,
) -> Admitted | Refused:
    """Check the setup `body`; refusals, resumptions and faults fired are counted in the stats
    and `record`. `open_sessions` is how many sessions the emulator holds, this one included."""
    if not context.api_keys.accepts(api_key):
        context.stats.sessions_refused += 1
        return Refused(CLOSE_POLICY, REASON_BAD_KEY)
    if open_sessions > context.settings.max_sessions:
        context.stats.sessions_refused += 1
        return Refused(CLOSE_INTERNAL, REASON_EXHAUSTED)
    try:
        setup = wire.SetupRequest.parse(body)
        control = parse_control(setup.system_instruction)
    except (wire.ProtocolError, ScenarioError) as exc:
        return Refused(CLOSE_INVALID_ARGUMENT, str(exc))
    model_name = setup.model.removeprefix("models/")
    if context.settings.accepted_models and model_name not in context.settings.accepted_models:
        return Refused(
            CLOSE_POLICY,
            f"{setup.model} is not found for API version {api_version}, or is not "
            "supported for bidiGenerateContent.",
        )
    lineage, next_turn = Lineage(), 0
    if setup.resumption_handle is not None:
        snapshot = context.handles.get(setup.resumption_handle)
        if snapshot is None:
            return Refused(CLOSE_INVALID_ARGUMENT, REASON_BAD_HANDLE)
        if snapshot.lineage.open_sessions and _refuses_resume_while_open(context, snapshot, record):
            return Refused(CLOSE_INTERNAL, REASON_INTERNAL)
        lineage, next_turn = snapshot.lineage, snapshot.next_turn
        record.resumed = True
        control = Control(
            scenario=snapshot.scenario,
            faults=snapshot.session_faults,
            cap_s=snapshot.cap_s,
            go_away_s=snapshot.go_away_s,
        )
        context.stats.sessions_resumed += 1
    scenario = context.scenarios.get(control.scenario)
    if scenario is None:
        known = ", ".join(sorted(context.scenarios))
        return Refused(
            CLOSE_INVALID_ARGUMENT,
            f"emulator control keyword: unknown scenario {control.scenario!r} (known: {known})"[
                :120
            ],
        )
    return Admitted(setup, control.scenario, scenario, control, lineage, next_turn)


def _refuses_resume_while_open(
    context: EmulatorContext, snapshot: Snapshot, record: SessionRecord
) -> bool:
    """The reported refusal of a resume while the lineage's old socket is still open.

    Unlike the other faults this is a standing condition, not once per turn: it holds for
    as long as the client keeps the old connection open.
    """
    scenario = context.scenarios.get(snapshot.scenario)
    base = scenario.faults if scenario is not None else Faults()
    if not base.merged(snapshot.session_faults).refuse_resume_while_open:
        return False
    context.stats.faults_fired["refuse_resume_while_open"] += 1
    append_bounded(record.faults_fired, "refuse_resume_while_open")
    return True
