"""Whole calls end to end: widget WebSocket -> gateway -> google-genai -> emulator, with the
real API on real PostgreSQL and Redis, and tool webhooks served by the test."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    Agents,
    call_through_gateway,
    held_tool,
    running_gateway,
    speak_one_turn,
    speech_then_silence,
    widget_call,
)

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis (the API)

OUTPUT_BYTES_PER_MS = 48  # 24 kHz PCM16


async def test_call_relays_audio_and_transcripts_and_the_api_stores_them(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token(voice="Kore")
    async with call_through_gateway(settings, emulator, http, token) as call:
        started = await call.wait_for("session.started")
        assert (started["input_rate"], started["output_rate"]) == (16_000, 24_000)
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        # The default scenario answers 1200 ms of audio.
        assert len(call.audio) == 1200 * OUTPUT_BYTES_PER_MS
        finals = [(e["role"], e["text"]) for e in call.of_type("transcript") if e["final"]]
        assert finals == [("user", "Hello there."), ("agent", "Hi! How can I help?")]
        await call.ws.send_str('{"type": "end"}')
        assert (await call.wait_for("session.ended"))["reason"] == "hangup"
        assert await call.wait_closed() == 1000
    call_id = started["call_id"]
    assert await agents.transcript(call_id) == [
        (1, "user", "Hello there."),
        (2, "agent", "Hi! How can I help?"),
    ]
    row = await agents.call_row(call_id)
    assert row["end_reason"] == "hangup"
    assert row["duration_ms"] > 0
    assert row["total_tokens"] > 0  # usage reported by the emulator, summed per turn
    assert row["instance_id"] == "gw-test"
    # The session the emulator saw carried the agent's voice and instructions.
    (session,) = await emulator.get_json("/sessions")
    assert session["system_instruction"].startswith("Be helpful.")


async def test_tool_call_reaches_the_webhook_and_its_result_reaches_the_model(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token(instructions="[[emulator scenario=weather]]", weather_tool=True)
    async with call_through_gateway(settings, emulator, http, token) as call:
        started = await speak_one_turn(call)
        statuses = [(e["name"], e["status"]) for e in call.of_type("tool")]
        assert statuses == [("get_weather", "started"), ("get_weather", "succeeded")]
        agent_final = [e["text"] for e in call.of_type("transcript") if e["role"] == "agent"]
        # The emulator speaks the tool response it got: the webhook's answer, as output.
        assert '"output":{"city":"Paris","sky":"sunny"}' in agent_final[-1]
    (request,) = agents.webhook.requests
    assert (request["tool"], request["arguments"]) == ("get_weather", {"city": "Paris"})
    assert request["call_id"] == started["call_id"]
    transcript = await agents.transcript(started["call_id"])
    assert [role for _, role, _ in transcript] == ["user", "agent"]


async def test_duplicate_and_idless_tool_calls_run_once_and_are_answered(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token(
        instructions="[[emulator scenario=weather duplicate_tool_call idless_tool_call]]",
        weather_tool=True,
    )
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, token) as call:
            await speak_one_turn(call)
            assert [e["status"] for e in call.of_type("tool")] == ["started", "succeeded"]
        metrics = await (await http.get(f"{gw.url}/metrics")).text()
    assert len(agents.webhook.requests) == 1
    assert 'orbis_gateway_tool_calls_total{outcome="duplicate"} 1.0' in metrics
    assert 'orbis_gateway_tool_calls_total{outcome="succeeded"} 1.0' in metrics
    stats = await emulator.get_json("/stats")
    assert stats["tool_responses"] == 1


async def test_cancelled_tool_call_is_not_answered(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    agents.webhook.handler = held_tool(release, {"late": True})
    token = await agents.token(
        instructions="[[emulator scenario=weather cancel_tool_call]]", weather_tool=True
    )
    async with call_through_gateway(settings, emulator, http, token) as call:
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("tool", status="cancelled")
        await call.wait_for("turn.complete")
        release.set()
        await call.ws.send_str('{"type": "ping"}')
        await call.wait_for("pong")
        assert [e["status"] for e in call.of_type("tool")] == ["started", "cancelled"]
    stats = await emulator.get_json("/stats")
    assert stats["tool_responses"] == 0


async def test_interruption_tells_the_widget_to_flush(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token(instructions="[[emulator interrupt=before_turn_complete]]")
    async with call_through_gateway(settings, emulator, http, token) as call:
        await speak_one_turn(call)
        types_ = [e["type"] for e in call.events]
        assert types_.index("interrupted") < types_.index("turn.complete")
        # Half the reply was spoken before the barge-in.
        assert len(call.audio) < 1200 * OUTPUT_BYTES_PER_MS


async def test_fragmented_transcriptions_are_stitched_per_turn(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token(instructions="[[emulator fragment_transcriptions]]")
    async with call_through_gateway(settings, emulator, http, token) as call:
        await speak_one_turn(call)
        partial = [e for e in call.of_type("transcript") if not e["final"]]
        final = [(e["role"], e["text"]) for e in call.of_type("transcript") if e["final"]]
    assert len(partial) > 2  # the fragments arrived one by one
    assert final == [("user", "Hello there."), ("agent", "Hi! How can I help?")]
