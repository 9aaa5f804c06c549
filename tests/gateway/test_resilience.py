"""Upstream failures the real service is known for, and slow or absent neighbours."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import aiohttp

from runtime.emulator.testing import EmulatorHandle, emulator_process
from runtime.gateway.settings import GatewaySettings
from tests.gateway.stub_api import StubApi
from tests.gateway.support import eventually, running_gateway, speech_then_silence, widget_call


async def emulator_resumed(emulator: EmulatorHandle) -> bool:
    stats = await emulator.get_json("/stats")
    return bool(stats["sessions_resumed"] >= 1)


async def test_go_away_resumes_the_session_without_a_break(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    # Each upstream connection lives 3 s and announces its end 1 s ahead with goAway.
    agent = stub_api.agent(instructions="[[emulator cap_s=3 go_away_s=1]]")
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(agent)) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_count("turn.complete", 1)
        await eventually(lambda: emulator_resumed(emulator))
        # The conversation goes on over the resumed session.
        await call.send_frames(speech_then_silence())
        await call.wait_count("turn.complete", 2)
        assert call.of_type("error") == []
        assert not call.ws.closed
        metrics = await (await http.get(f"{gw.url}/metrics")).text()
    stats = await emulator.get_json("/stats")
    assert stats["sessions_resumed"] >= 1
    assert 'orbis_gateway_resumptions_total{cause="go_away",outcome="resumed"}' in metrics


async def test_1011_mid_turn_is_resumed_transparently(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    agent = stub_api.agent(instructions="[[emulator close_1011_mid_turn]]")
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(agent)) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        # The reply was cut halfway by the 1011; the caller simply says it again.
        await eventually(lambda: emulator_resumed(emulator))
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        assert call.of_type("error") == []
        metrics = await (await http.get(f"{gw.url}/metrics")).text()
    assert 'orbis_gateway_gemini_errors_total{code="1011"} 1.0' in metrics
    assert 'orbis_gateway_resumptions_total{cause="closed_1011",outcome="resumed"} 1.0' in metrics


async def test_refused_api_key_is_a_clean_upstream_rejected_error(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    bad_key = replace(settings, gemini_api_key="revoked-key")
    async with (
        running_gateway(bad_key, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(stub_api.agent())) as call,
    ):
        error = await call.wait_for("error")
        assert error["code"] == "upstream_rejected"
        assert await call.wait_closed() == 1011
    (ended,) = stub_api.ended.values()
    assert ended["end_reason"] == "upstream_rejected"


async def test_emulator_killed_mid_call_ends_the_call_with_upstream_unavailable(
    settings: GatewaySettings, stub_api: StubApi, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with emulator_process(tmp_path / "emulator-process") as emulator:
        process_settings = replace(
            settings,
            gemini_base_url=emulator.base_url,
            gemini_api_key=emulator.api_key,
            resume_attempts=2,
        )
        async with (
            running_gateway(process_settings, gemini_ssl_context=emulator.ssl_context()) as gw,
            widget_call(http, gw, stub_api.issue(stub_api.agent())) as call,
        ):
            started = await call.wait_for("session.started")
            await call.send_frames(speech_then_silence())
            await call.wait_for("turn.complete")
            emulator.kill()
            error = await call.wait_for("error", within=15)
            assert error["code"] == "upstream_unavailable"
            assert await call.wait_closed() == 1011
    call_id = started["call_id"]
    assert stub_api.ended[call_id]["end_reason"] == "upstream_unavailable"
    # What was said before the crash is kept.
    assert [s["role"] for s in stub_api.transcripts[call_id].values()] == ["user", "agent"]


async def test_slow_tool_times_out_into_a_clean_tool_error(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    release = asyncio.Event()

    async def hanging_tool(name: str, arguments: dict[str, object]) -> dict[str, object]:
        await release.wait()
        return {"ok": True, "result": "too late"}

    stub_api.tool_handler = hanging_tool
    agent = stub_api.agent(
        instructions="[[emulator scenario=weather]]",
        tools=[{"name": "get_weather", "description": "", "parameters": {"type": "object"}}],
    )
    fast_timeout = replace(settings, tool_timeout_seconds=0.5)
    async with (
        running_gateway(fast_timeout, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(agent)) as call,
    ):
        await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        assert [e["status"] for e in call.of_type("tool")] == ["started", "failed"]
        agent_text = [e["text"] for e in call.of_type("transcript") if e["role"] == "agent"]
        assert '"error":{"code":"tool_timeout"' in agent_text[-1]
        release.set()
        metrics = await (await http.get(f"{gw.url}/metrics")).text()
    assert 'orbis_gateway_tool_calls_total{outcome="timeout"} 1.0' in metrics


async def test_slow_transcript_endpoint_does_not_stall_the_call_and_loses_nothing(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    stub_api: StubApi,
    http: aiohttp.ClientSession,
) -> None:
    stub_api.delay = 1.5  # longer than the gateway's API timeout below: the first tries fail
    slow_api = replace(settings, api_timeout_seconds=1.0)
    async with (
        running_gateway(slow_api, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, stub_api.issue(stub_api.agent())) as call,
    ):
        started = await call.wait_for("session.started")
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        await asyncio.sleep(1.2)  # let a timed-out upload happen while the call goes on
        stub_api.delay = 0.0
        await call.send_frames(speech_then_silence())
        await call.wait_count("turn.complete", 2)
        await call.ws.send_str('{"type": "end"}')
        await call.wait_closed()
    stored = stub_api.transcripts[started["call_id"]]
    assert sorted(stored) == [1, 2, 3, 4]
