"""Every injectable fault, observed from the SDK's side the way the gateway will see it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from google.genai import errors, live, types

from runtime.emulator.testing import CertPair, EmulatorHandle, running_emulator
from tests.emulator.conftest import (
    MODEL,
    TurnSummary,
    receive_turn,
    receive_until,
    receive_until_closed,
    silence,
    stream_pcm,
    text,
    tone,
)

WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Current weather in a city",
            parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}},
        )
    ]
)
FULL_REPLY_BYTES = 24_000 * 2 * 1200 // 1000  # the default scenario's 1.2 s answer


@asynccontextmanager
async def live_session(
    emulator: EmulatorHandle, control: str, **changes: object
) -> AsyncIterator[live.AsyncSession]:
    """A session whose system instruction carries the emulator control keyword."""
    settings: dict[str, object] = {
        "response_modalities": [types.Modality.AUDIO],
        "system_instruction": f"Test agent. [[emulator {control}]]",
        "input_audio_transcription": types.AudioTranscriptionConfig(),
        "output_audio_transcription": types.AudioTranscriptionConfig(),
        "session_resumption": types.SessionResumptionConfig(),
    }
    cfg = types.LiveConnectConfig.model_validate({**settings, **changes})
    async with (
        asyncio.timeout(20),
        emulator.client().aio.live.connect(model=MODEL, config=cfg) as session,
    ):
        yield session


async def ask_for_tool(session: live.AsyncSession) -> TurnSummary:
    await session.send_client_content(turns=text("Weather in Paris?"))
    return await receive_until(session, lambda s: bool(s.tool_calls))


async def test_latency_delays_the_reply(emulator: EmulatorHandle) -> None:
    async with live_session(emulator, "latency_ms=400") as session:
        started = time.monotonic()
        await session.send_client_content(turns=text("hello"))
        turn = await receive_turn(session)
        elapsed = time.monotonic() - started
    assert turn.turn_complete
    assert elapsed >= 0.4


async def test_close_1011_mid_turn_then_resume_replays_the_turn(emulator: EmulatorHandle) -> None:
    async with live_session(emulator, "close_1011_mid_turn") as session:
        await session.send_client_content(turns=text("hello"))
        cut, closed = await receive_until_closed(session)
    assert closed.code == 1011
    assert "Internal error encountered." in str(closed)
    assert 0 < len(cut.audio) < FULL_REPLY_BYTES
    assert not cut.turn_complete
    resume = types.SessionResumptionConfig(handle=cut.handles[-1])
    async with live_session(emulator, "close_1011_mid_turn", session_resumption=resume) as session:
        await session.send_client_content(turns=text("hello again"))
        turn = await receive_until(session, lambda s: s.turn_complete)
    assert len(turn.audio) == FULL_REPLY_BYTES  # the fault fired once for this lineage
    stats = await emulator.get_json("/stats")
    assert stats["faults_fired"] == {"close_1011_mid_turn": 1}
    assert stats["sessions_resumed"] == 1


async def test_premature_turn_complete_leaves_audio_for_the_next_receive(
    emulator: EmulatorHandle,
) -> None:
    async with live_session(emulator, "premature_turn_complete") as session:
        await session.send_client_content(turns=text("hello"))
        early = await receive_turn(session)
        late = await receive_turn(session)
    assert early.turn_complete and early.usage is None
    assert 0 < len(early.audio) < FULL_REPLY_BYTES
    assert late.turn_complete and late.usage is not None
    assert len(early.audio) + len(late.audio) == FULL_REPLY_BYTES


async def test_silence_after_tool_response(emulator: EmulatorHandle) -> None:
    async with live_session(
        emulator, "scenario=weather silence_after_tool_response", tools=[WEATHER]
    ) as session:
        [call] = (await ask_for_tool(session)).tool_calls
        await session.send_tool_response(
            function_responses=[types.FunctionResponse(id=call.id, name=call.name, response={})]
        )
        nothing = TurnSummary()
        with pytest.raises(TimeoutError):
            await receive_until(session, lambda s: bool(s.order), limit_s=1.0, into=nothing)
    assert nothing.order == []
    [record] = await emulator.get_json("/sessions")
    assert record["tool_responses"][0]["id"] == call.id
    assert record["faults_fired"] == ["silence_after_tool_response"]


async def test_duplicate_tool_call_is_answered_once(emulator: EmulatorHandle) -> None:
    async with live_session(
        emulator, "scenario=weather duplicate_tool_call", tools=[WEATHER]
    ) as session:
        await session.send_client_content(turns=text("Weather in Paris?"))
        calls = await receive_until(session, lambda s: len(s.tool_calls) == 2)
        first, second = calls.tool_calls
        assert first.id == second.id and first.name == second.name
        await session.send_tool_response(
            function_responses=[types.FunctionResponse(id=first.id, name=first.name, response={})]
        )
        answer = await receive_until(session, lambda s: s.turn_complete)
    assert answer.output_text


async def test_idless_tool_call_is_answered_by_name(emulator: EmulatorHandle) -> None:
    async with live_session(
        emulator, "scenario=weather idless_tool_call", tools=[WEATHER]
    ) as session:
        [call] = (await ask_for_tool(session)).tool_calls
        assert call.id is None
        # The SDK refuses a response without an id, so a client makes one up; the name matches.
        made_up = types.FunctionResponse(id="generated-1", name=call.name, response={"ok": True})
        await session.send_tool_response(function_responses=[made_up])
        answer = await receive_until(session, lambda s: s.turn_complete)
    assert "".join(answer.output_text) == 'Here is the weather: {"ok":true}'


async def test_tool_call_cancellation(emulator: EmulatorHandle) -> None:
    async with live_session(
        emulator, "scenario=weather cancel_tool_call", tools=[WEATHER]
    ) as session:
        await session.send_client_content(turns=text("Weather in Paris?"))
        turn = await receive_until(session, lambda s: s.turn_complete)
    [call] = turn.tool_calls
    assert turn.cancelled_ids == [call.id]
    assert turn.order == ["tool_call", "tool_call_cancellation", "turn_complete"]


@pytest.mark.parametrize(
    ("when", "order_tail"),
    [
        ("before_turn_complete", ["interrupted", "turn_complete"]),
        ("after_turn_complete", ["turn_complete", "interrupted"]),
    ],
)
async def test_interrupted(emulator: EmulatorHandle, when: str, order_tail: list[str]) -> None:
    async with live_session(emulator, f"interrupt={when}") as session:
        await session.send_client_content(turns=text("hello"))
        turn = await receive_until(session, lambda s: s.interrupted and s.turn_complete)
    assert turn.order[-2:] == order_tail
    if when == "before_turn_complete":
        assert len(turn.audio) < FULL_REPLY_BYTES


async def test_fragmented_transcriptions(emulator: EmulatorHandle) -> None:
    async with live_session(emulator, "fragment_transcriptions") as session:
        await stream_pcm(session, tone(300) + silence(600))
        turn = await receive_turn(session)
    assert len(turn.output_text) > 2
    assert all(len(fragment) <= 4 for fragment in turn.output_text + turn.input_text)
    assert "".join(turn.output_text) == "Hi! How can I help?"
    assert "".join(turn.input_text) == "Hello there."


async def test_faults_placed_on_one_turn_by_the_scenario_file(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    scenario = {
        "turns": [
            {"output_transcription": "fine", "audio_ms": 300},
            {
                "output_transcription": "broken",
                "audio_ms": 300,
                "faults": {"premature_turn_complete": True},
            },
        ]
    }
    async with (
        running_emulator(tmp_path, cert=emulator_cert, scenario=scenario) as emulator,
        live_session(emulator, "") as session,
    ):
        await session.send_client_content(turns=text("one"))
        healthy = await receive_turn(session)
        await session.send_client_content(turns=text("two"))
        early = await receive_turn(session)
        late = await receive_turn(session)
    assert healthy.usage is not None and len(healthy.audio) == 24_000 * 2 * 300 // 1000
    assert early.usage is None and late.usage is not None
    assert "".join(late.output_text) == "broken"


async def test_barge_in_interrupts_a_paced_reply_and_cancels_a_pending_call(
    tmp_path: Path, emulator_cert: CertPair
) -> None:
    scenario = {
        "pace": 1.0,
        "turns": [
            {"output_transcription": "a long answer", "audio_ms": 5000},
            {"tool_call": {"args": {"city": "Oslo"}}},
        ],
    }
    async with (
        running_emulator(tmp_path, cert=emulator_cert, scenario=scenario) as emulator,
        live_session(emulator, "", tools=[WEATHER]) as session,
    ):
        await session.send_client_content(turns=text("talk"))
        started = await receive_until(session, lambda s: bool(s.audio))
        await stream_pcm(session, tone(200))  # the caller starts talking over the model
        rest = await receive_until(session, lambda s: s.turn_complete)
        assert rest.interrupted
        assert len(started.audio) + len(rest.audio) < 24_000 * 2 * 5
        await stream_pcm(session, silence(600))  # that utterance ends: the next turn calls a tool
        call = await receive_until(session, lambda s: bool(s.tool_calls))
        await stream_pcm(session, tone(200))  # talking over a running tool cancels it
        cancelled = await receive_until(session, lambda s: bool(s.cancelled_ids))
    assert cancelled.cancelled_ids == [call.tool_calls[0].id]


async def test_resume_is_refused_while_the_old_socket_is_open(emulator: EmulatorHandle) -> None:
    async with live_session(emulator, "refuse_resume_while_open") as old:
        first = await receive_until(old, lambda s: bool(s.handles))
        resume = types.SessionResumptionConfig(handle=first.handles[-1])
        with pytest.raises(errors.APIError) as refused:
            async with live_session(emulator, "", session_resumption=resume):
                pass
        assert refused.value.code == 1011
    # Once the old socket is closed the same handle works.
    async with live_session(emulator, "", session_resumption=resume) as resumed:
        await resumed.send_client_content(turns=text("hello"))
        turn = await receive_until(resumed, lambda s: s.turn_complete)
    assert turn.audio
    stats = await emulator.get_json("/stats")
    assert stats["faults_fired"] == {"refuse_resume_while_open": 1}


async def test_typed_input_while_a_tool_runs_cancels_the_call(emulator: EmulatorHandle) -> None:
    async with live_session(emulator, "scenario=weather", tools=[WEATHER]) as session:
        [call] = (await ask_for_tool(session)).tool_calls
        await session.send_client_content(turns=text("never mind"))
        turn = await receive_until(session, lambda s: bool(s.cancelled_ids))
    assert turn.cancelled_ids == [call.id]
