"""A whole call through the gateway: widget WebSocket -> gateway -> google-genai -> emulator."""

from __future__ import annotations

import asyncio

import aiohttp

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.settings import GatewaySettings
from tests.gateway.stub_api import StubApi
from tests.gateway.support import running_gateway, speech_then_silence, widget_call

OUTPUT_BYTES_PER_MS = 48  # 24 kHz PCM16


async def test_call_relays_audio_transcripts_and_reports_the_end(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        token = stub_api.issue(stub_api.agent())
        async with widget_call(http, gw, token) as call:
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
    assert stub_api.ended[call_id]["end_reason"] == "hangup"
    assert stub_api.ended[call_id]["duration_ms"] > 0
    stored = stub_api.transcripts[call_id]
    assert [(s["seq"], s["role"], s["text"]) for s in stored.values()] == [
        (1, "user", "Hello there."),
        (2, "agent", "Hi! How can I help?"),
    ]


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def weather_agent(stub_api: StubApi, *faults: str) -> dict[str, object]:
    keyword = " ".join(["scenario=weather", *faults])
    return stub_api.agent(
        instructions=f"You answer weather questions. [[emulator {keyword}]]",
        tools=[WEATHER_TOOL],
    )


async def test_tool_call_runs_through_the_api_and_its_result_reaches_the_model(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(weather_agent(stub_api))) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        statuses = [(e["name"], e["status"]) for e in call.of_type("tool")]
        assert statuses == [("get_weather", "started"), ("get_weather", "succeeded")]
        agent_final = [e["text"] for e in call.of_type("transcript") if e["role"] == "agent"]
        # The emulator speaks the tool response it received: the API's result, as output.
        assert '"output":{"tool":"get_weather","arguments":{"city":"Paris"}}' in agent_final[-1]
    assert [(r["name"], r["arguments"]) for r in stub_api.tool_requests] == [
        ("get_weather", {"city": "Paris"})
    ]


async def test_duplicate_and_idless_tool_calls_run_once_and_are_answered(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    agent = weather_agent(stub_api, "duplicate_tool_call", "idless_tool_call")
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(agent)) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        assert [e["status"] for e in call.of_type("tool")] == ["started", "succeeded"]
        metrics = await (await http.get(f"{gw.url}/metrics")).text()
    assert len(stub_api.tool_requests) == 1
    assert 'orbis_gateway_tool_calls_total{outcome="duplicate"} 1.0' in metrics
    assert 'orbis_gateway_tool_calls_total{outcome="succeeded"} 1.0' in metrics
    stats = await emulator.get_json("/stats")
    assert stats["tool_responses"] == 1


async def test_cancelled_tool_call_is_not_answered(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    release = asyncio.Event()

    async def slow_tool(name: str, arguments: dict[str, object]) -> dict[str, object]:
        await release.wait()
        return {"ok": True, "result": "late"}

    stub_api.tool_handler = slow_tool
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        agent = weather_agent(stub_api, "cancel_tool_call")
        async with widget_call(http, gw, stub_api.issue(agent)) as call:
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
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    agent = stub_api.agent(instructions="[[emulator interrupt=before_turn_complete]]")
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(agent)) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        types_ = [e["type"] for e in call.events]
        assert types_.index("interrupted") < types_.index("turn.complete")
        # Half the reply was spoken before the barge-in.
        assert len(call.audio) < 1200 * OUTPUT_BYTES_PER_MS


async def test_fragmented_transcriptions_are_stitched_per_turn(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    agent = stub_api.agent(instructions="[[emulator fragment_transcriptions]]")
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(agent)) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        partial = [e for e in call.of_type("transcript") if not e["final"]]
        final = [(e["role"], e["text"]) for e in call.of_type("transcript") if e["final"]]
    assert len(partial) > 2  # the fragments arrived one by one
    assert final == [("user", "Hello there."), ("agent", "Hi! How can I help?")]
