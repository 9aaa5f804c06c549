"""Every error a widget can cause has a stable code (docs/protocol.md), and costs no one else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    FRAME_BYTES,
    Agents,
    call_through_gateway,
    handshake_error,
    running_gateway,
    speech_then_silence,
    widget_call,
)

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis (the API)


async def refused(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    agents: Agents,
    http: aiohttp.ClientSession,
    frame: bytes | str,
) -> tuple[dict[str, object], int | None]:
    """Send one bad frame after session.started; the error event and the close code."""
    async with call_through_gateway(settings, emulator, http, await agents.token()) as call:
        await call.wait_for("session.started")
        if isinstance(frame, bytes):
            await call.ws.send_bytes(frame)
        else:
            await call.ws.send_str(frame)
        error = await call.wait_for("error")
        ended = await call.wait_for("session.ended")
        assert ended["reason"] == error["code"]
        return error, await call.wait_closed()


async def test_odd_length_audio_frame_is_bad_frame(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    error, close_code = await refused(settings, emulator, agents, http, b"\x00" * 641)
    assert (error["code"], close_code) == ("bad_frame", 1007)


async def test_oversize_frame_is_frame_too_large(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    frame = b"\x00" * (settings.max_frame_bytes + 2)
    error, close_code = await refused(settings, emulator, agents, http, frame)
    assert (error["code"], close_code) == ("frame_too_large", 1009)


async def test_text_that_is_not_a_json_event_is_bad_json(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    error, close_code = await refused(settings, emulator, agents, http, "{not json")
    assert (error["code"], close_code) == ("bad_json", 1007)


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 60_000,  # unterminated: the stdlib parser recursed into a RecursionError
        "[" * 30_000 + "]" * 30_000,
        '{"type": "ping", "x": ' + "[" * 65 + "]" * 65 + "}",
    ],
    ids=["unterminated", "balanced", "just-too-deep"],
)
async def test_deeply_nested_json_is_bad_json_without_a_traceback(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    agents: Agents,
    http: aiohttp.ClientSession,
    frame: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert len(frame) <= settings.max_frame_bytes
    with caplog.at_level(logging.INFO):
        error, close_code = await refused(settings, emulator, agents, http, frame)
    assert (error["code"], close_code) == ("bad_json", 1007)
    # A client choosing the frame must not be able to write error-level lines into the log.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r for r in caplog.records if r.exc_info] == []


async def test_unknown_event_is_reported_and_the_call_goes_on(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    async with call_through_gateway(settings, emulator, http, await agents.token()) as call:
        await call.wait_for("session.started")
        await call.ws.send_str('{"type": "dance"}')
        assert (await call.wait_for("error"))["code"] == "unknown_event"
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        assert not call.ws.closed


async def test_flood_of_frames_is_rate_limited_and_other_calls_are_unaffected(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    good_token, bad_token = await agents.token(), await agents.token()
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, good_token) as good,
        widget_call(http, gw, bad_token) as flood,
    ):
        await good.wait_for("session.started")
        await flood.wait_for("session.started")
        # 10 s of audio in one burst: far faster than real time.
        await flood.send_frames([b"\x00" * FRAME_BYTES] * 500)
        assert (await flood.wait_for("error"))["code"] == "rate_limited"
        assert await flood.wait_closed() == 1008
        await good.send_frames(speech_then_silence())
        await good.wait_for("turn.complete")
        assert good.of_type("error") == []


@asynccontextmanager
async def unanswering_upstream() -> AsyncIterator[str]:
    """A TCP port that accepts connections and never says anything (a stuck upstream)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


async def test_audio_before_session_started_is_not_ready_then_upstream_unavailable(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    async with unanswering_upstream() as base_url:
        stuck = settings.model_copy(
            update={"gemini_base_url": base_url, "upstream_connect_timeout_seconds": 0.5}
        )
        async with (
            running_gateway(stuck, gemini_ssl_context=emulator.ssl_context()) as gw,
            widget_call(http, gw, await agents.token()) as call,
        ):
            await call.send_frames(speech_then_silence()[:5])
            not_ready = await call.wait_for("error", code="not_ready")
            assert "session.started" in not_ready["message"]
            assert len(call.of_type("error")) == 1  # reported once, not per frame
            final = await call.wait_for("error", code="upstream_unavailable")
            assert final["message"]
            assert await call.wait_closed() == 1011
            assert call.of_type("session.started") == []


async def test_wrong_or_missing_origin_is_refused_before_the_upgrade(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    token = await agents.token()
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        assert await handshake_error(http, gw, token, origin="https://evil.example") == (
            403,
            "origin_not_allowed",
        )
        assert await handshake_error(http, gw, "whatever", origin=None) == (
            403,
            "origin_not_allowed",
        )


async def test_expired_used_or_unknown_token_is_token_invalid(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    expired, used = await agents.token(), await agents.token()
    await agents.query(
        "UPDATE widget_sessions SET expires_at = now() - interval '1 second' "
        "WHERE expires_at = (SELECT min(expires_at) FROM widget_sessions)"
    )
    origin = "https://shop.example"
    async with running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw:
        assert await handshake_error(http, gw, expired, origin=origin) == (401, "token_invalid")
        assert await handshake_error(http, gw, "wst_unknown", origin=origin) == (
            401,
            "token_invalid",
        )
        async with widget_call(http, gw, used) as call:
            await call.wait_for("session.started")
            assert await handshake_error(http, gw, used, origin=origin) == (401, "token_invalid")


async def test_agent_call_limit_is_call_limit_reached(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    agent = await agents.api.create_agent(
        agents.tenant, allowed_origins=["https://shop.example"], max_concurrent_calls=1
    )
    first, second = [
        (await agents.api.widget_session(agent["public_id"], origin="https://shop.example"))[
            "token"
        ]
        for _ in range(2)
    ]
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, first) as call,
    ):
        await call.wait_for("session.started")
        async with widget_call(http, gw, second) as refused_call:
            assert (await refused_call.wait_for("error"))["code"] == "call_limit_reached"
            assert await refused_call.wait_closed() == 1013
    reasons = sorted(
        row["end_reason"] or "" for row in await agents.query("SELECT end_reason FROM calls")
    )
    assert "call_limit_reached" in reasons


async def test_full_gateway_is_server_busy_and_keeps_the_token_usable(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    first, second = await agents.token(), await agents.token()
    one_call = settings.model_copy(update={"max_calls": 1})
    async with running_gateway(one_call, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, first) as call:
            await call.wait_for("session.started")
            status, code = await handshake_error(http, gw, second, origin="https://shop.example")
            assert (status, code) == (503, "server_busy")
        async with asyncio.timeout(10):
            await gw.gateway.no_calls.wait()
        # The refused token was not redeemed: it works once there is room.
        async with widget_call(http, gw, second) as call:
            await call.wait_for("session.started")


async def test_silent_client_is_idle_timeout_and_long_call_is_max_duration(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    short = settings.model_copy(update={"idle_timeout_seconds": 0.5, "max_call_seconds": 1})
    async with running_gateway(short, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, await agents.token()) as idle:
            await idle.wait_for("session.started")
            assert (await idle.wait_for("error"))["code"] == "idle_timeout"
            assert await idle.wait_closed() == 1000
        async with widget_call(http, gw, await agents.token()) as talker:
            await talker.wait_for("session.started")
            for _ in range(60):  # keeps talking (in real time) past the 1 s maximum
                if talker.ws.closed or talker.of_type("error"):
                    break
                await talker.send_frames([b"\x00" * FRAME_BYTES], pace=1.0)
            assert (await talker.wait_for("error"))["code"] == "max_duration"


async def test_backlog_after_a_network_stall_is_not_a_flood(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    async with call_through_gateway(settings, emulator, http, await agents.token()) as call:
        await call.wait_for("session.started")
        # 3 s of a caller's audio arriving at once, as after a stalled mobile connection.
        backlog = speech_then_silence() * 3
        await call.send_frames(backlog)
        await call.wait_for("turn.complete")
        assert call.of_type("error") == []
