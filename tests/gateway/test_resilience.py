"""Upstream failures the real service is known for, and slow or absent neighbours."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from runtime.emulator.testing import EmulatorHandle, emulator_process
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    Agents,
    call_through_gateway,
    delaying_proxy,
    eventually,
    held_tool,
    running_gateway,
    speak_one_turn,
    speech_then_silence,
    widget_call,
)

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis (the API)


async def emulator_resumed(emulator: EmulatorHandle) -> bool:
    stats = await emulator.get_json("/stats")
    return bool(stats["sessions_resumed"] >= 1)


async def upload_failed(http: aiohttp.ClientSession, gateway_url: str) -> bool:
    metrics = await (await http.get(f"{gateway_url}/metrics")).text()
    return "orbis_gateway_transcript_upload_failures_total 0.0" not in metrics


async def test_go_away_resumes_the_session_without_a_break(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    # Each upstream connection lives 3 s and announces its end 1 s ahead with goAway.
    token = await agents.token(instructions="[[emulator cap_s=3 go_away_s=1]]")
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, token) as call:
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
    assert 'orbis_gateway_resumptions_total{cause="go_away",outcome="resumed"}' in metrics


async def test_1011_mid_turn_is_resumed_transparently(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token(instructions="[[emulator close_1011_mid_turn]]")
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, token) as call:
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
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    bad_key = settings.model_copy(update={"gemini_api_key": SecretStr("revoked-key")})
    async with call_through_gateway(bad_key, emulator, http, await agents.token()) as call:
        error = await call.wait_for("error")
        assert error["code"] == "upstream_rejected"
        assert await call.wait_closed() == 1011
    (row,) = await agents.query("SELECT end_reason FROM calls")
    assert row["end_reason"] == "upstream_rejected"


async def test_emulator_killed_mid_call_ends_the_call_with_upstream_unavailable(
    settings: GatewaySettings, agents: Agents, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    token = await agents.token()
    async with emulator_process(tmp_path / "emulator-process") as emulator:
        process_settings = settings.model_copy(
            update={
                "gemini_base_url": emulator.base_url,
                "gemini_api_key": SecretStr(emulator.api_key),
                "resume_attempts": 2,
            }
        )
        async with (
            running_gateway(process_settings, gemini_ssl_context=emulator.ssl_context()) as gw,
            widget_call(http, gw, token) as call,
        ):
            started = await speak_one_turn(call)
            emulator.kill()
            error = await call.wait_for("error", within=15)
            assert error["code"] == "upstream_unavailable"
            assert await call.wait_closed() == 1011
    call_id = started["call_id"]
    assert (await agents.call_row(call_id))["end_reason"] == "upstream_unavailable"
    # What was said before the crash is kept.
    assert [role for _, role, _ in await agents.transcript(call_id)] == ["user", "agent"]


async def test_slow_tool_webhook_is_a_clean_tool_error_and_the_call_goes_on(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()
    agents.webhook.handler = held_tool(release, {"too": "late"})
    token = await agents.token(
        instructions="[[emulator scenario=weather]]", weather_tool=True, tool_timeout_seconds=0.5
    )
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, token) as call:
            await speak_one_turn(call)
            assert [e["status"] for e in call.of_type("tool")] == ["started", "failed"]
            agent_text = [e["text"] for e in call.of_type("transcript") if e["role"] == "agent"]
            assert '"error":{"code":"tool_timeout"' in agent_text[-1]
        release.set()
        metrics = await (await http.get(f"{gw.url}/metrics")).text()
    assert 'orbis_gateway_tool_calls_total{outcome="timeout"} 1.0' in metrics


async def test_slow_api_does_not_stall_the_call_and_no_transcript_is_lost(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token()
    async with delaying_proxy(settings.api_url) as proxy:
        slow_api = settings.model_copy(update={"api_url": proxy.url, "api_timeout_seconds": 1.0})
        async with (
            running_gateway(slow_api, gemini_ssl_context=emulator.ssl_context()) as gw,
            widget_call(http, gw, token) as call,
        ):
            started = await call.wait_for("session.started")
            # From here each request to the API takes longer than the gateway waits for it.
            proxy.delay = 1.5
            await call.send_frames(speech_then_silence())
            await call.wait_for("turn.complete")
            await call.send_frames(speech_then_silence())
            await call.wait_count("turn.complete", 2)  # the call went on meanwhile
            await eventually(lambda: upload_failed(http, gw.url))
            proxy.delay = 0.0
            await call.ws.send_str('{"type": "end"}')
            await call.wait_closed()
    assert [seq for seq, _, _ in await agents.transcript(started["call_id"])] == [1, 2, 3, 4]
