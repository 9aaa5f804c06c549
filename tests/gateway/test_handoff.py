"""A draining gateway hands its calls to another instance: same call, same model session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    ORIGIN,
    Agents,
    RunningGateway,
    WidgetCall,
    handshake_error,
    running_gateway,
    speech_then_silence,
    widget_call,
)

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis (the API)


async def test_drained_call_moves_to_another_instance_with_its_model_session(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    trust = emulator.ssl_context()
    async with (
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-a"}), gemini_ssl_context=trust
        ) as a,
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-b"}), gemini_ssl_context=trust
        ) as b,
        widget_call(http, a, await agents.token()) as old,
    ):
        started = await old.wait_for("session.started")
        assert started["resumed"] is False
        await old.send_frames(speech_then_silence())
        await old.wait_for("turn.complete")
        drain = asyncio.create_task(a.gateway.drain(grace_seconds=10))
        hint = await old.wait_for("reconnect")
        token = hint["resume_token"]
        # The offer is bound to the call's origin, and single-use.
        assert await handshake_error(
            http, b, token, origin="https://evil.example", param="resume"
        ) == (403, "origin_not_allowed")
        async with widget_call(http, b, token, param="resume") as moved:
            again = await moved.wait_for("session.started")
            assert (again["call_id"], again["resumed"]) == (started["call_id"], True)
            await old.ws.send_str('{"type": "end"}')  # the widget lets go of the old socket
            await old.wait_closed()
            async with asyncio.timeout(10):
                await drain
            assert await handshake_error(http, b, token, origin=ORIGIN, param="resume") == (
                401,
                "token_invalid",
            )
            await moved.send_frames(speech_then_silence())
            await moved.wait_for("turn.complete")
            await moved.ws.send_str('{"type": "end"}')
            assert (await moved.wait_for("session.ended"))["reason"] == "hangup"
    stats = await emulator.get_json("/stats")
    assert stats["sessions_resumed"] == 1  # the model session itself moved, with its handle
    call_id = started["call_id"]
    assert (await agents.call_row(call_id))["end_reason"] == "hangup"
    assert [seq for seq, _, _ in await agents.transcript(call_id)] == [1, 2, 3, 4]


@asynccontextmanager
async def _drained_call(
    a: RunningGateway, http: aiohttp.ClientSession, agents: Agents
) -> AsyncIterator[tuple[WidgetCall, str, str, asyncio.Task[None]]]:
    """A started call on `a`, then `a` draining: (the old call, its id, the resume token,
    the drain)."""
    async with widget_call(http, a, await agents.token()) as old:
        call_id = (await old.wait_for("session.started"))["call_id"]
        drain = asyncio.create_task(a.gateway.drain(grace_seconds=10))
        hint = await old.wait_for("reconnect")
        yield old, call_id, hint["resume_token"], drain


async def test_a_widget_that_leaves_before_resuming_keeps_its_call(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    """The protocol lets a client close the draining socket before it resumes (the rotation
    e2e test's client does): the draining instance still owns the call until the move, so it
    must not record the call's end meanwhile; the moved call ends once, by hang-up."""
    trust = emulator.ssl_context()
    async with (
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-a"}), gemini_ssl_context=trust
        ) as a,
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-b"}), gemini_ssl_context=trust
        ) as b,
        _drained_call(a, http, agents) as (old, call_id, token, drain),
    ):
        await old.ws.close()
        await asyncio.sleep(1.0)  # the old instance sees the widget gone first
        async with widget_call(http, b, token, param="resume") as moved:
            again = await moved.wait_for("session.started")
            assert (again["call_id"], again["resumed"]) == (call_id, True)
            async with asyncio.timeout(10):
                await drain
            await moved.send_frames(speech_then_silence())
            await moved.wait_for("turn.complete")
            await moved.ws.send_str('{"type": "end"}')
            assert (await moved.wait_for("session.ended"))["reason"] == "hangup"
    assert (await agents.call_row(call_id))["end_reason"] == "hangup"


async def test_a_resume_attempt_that_fails_before_the_upgrade_leaves_the_token_good(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    """A resume attempt that dies before the 101 (its client gone, or its gateway stopped so
    that nginx tries the next one) must not spend the token: the retry takes the call. With
    a spent token the retry got 401 and the call was lost (main's rotation e2e test, CI)."""
    trust = emulator.ssl_context()
    async with (
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-a"}), gemini_ssl_context=trust
        ) as a,
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-b"}), gemini_ssl_context=trust
        ) as b,
        _drained_call(a, http, agents) as (old, call_id, token, drain),
    ):
        host, port = b.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            (
                f"GET /ws/call?resume={token} HTTP/1.1\r\nHost: {host}\r\n"
                f"Origin: {ORIGIN}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        writer.close()  # gone before the gateway answers
        await asyncio.sleep(0.5)
        async with asyncio.timeout(5):
            while b.gateway.opening:  # noqa: ASYNC110 (a counter, not an event)
                await asyncio.sleep(0.05)
        async with widget_call(http, b, token, param="resume") as moved:
            again = await moved.wait_for("session.started")
            assert (again["call_id"], again["resumed"]) == (call_id, True)
            await old.ws.send_str('{"type": "end"}')
            async with asyncio.timeout(10):
                await drain
            await moved.ws.send_str('{"type": "end"}')
            assert (await moved.wait_for("session.ended"))["reason"] == "hangup"
    assert (await agents.call_row(call_id))["end_reason"] == "hangup"


async def test_an_offer_nobody_takes_is_withdrawn_and_the_call_ended_by_its_instance(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    """When the drain's grace is over with the call not taken, the draining instance takes
    its offer back and records the end: a late resume is refused (401), not a second owner."""
    trust = emulator.ssl_context()
    async with (
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-a"}), gemini_ssl_context=trust
        ) as a,
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-b"}), gemini_ssl_context=trust
        ) as b,
        widget_call(http, a, await agents.token()) as old,
    ):
        call_id = (await old.wait_for("session.started"))["call_id"]
        drain = asyncio.create_task(a.gateway.drain(grace_seconds=1))
        token = (await old.wait_for("reconnect"))["resume_token"]
        async with asyncio.timeout(40):
            await drain
        assert await handshake_error(http, b, token, origin=ORIGIN, param="resume") == (
            401,
            "token_invalid",
        )
    assert (await agents.call_row(call_id))["end_reason"] == "drain"


async def test_a_call_whose_handshake_overlaps_the_drain_is_told_to_move(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    """A handshake past the capacity check when the drain begins (its token being redeemed)
    becomes a call the drain did not see: it gets the reconnect hint too, instead of being
    cut off with 1001 when the grace is over."""
    trust = emulator.ssl_context()
    async with running_gateway(
        settings.model_copy(update={"instance_id": "gw-a"}), gemini_ssl_context=trust
    ) as a:

        async def drain_mid_handshake() -> None:
            while not a.gateway.opening:  # noqa: ASYNC110 (a counter, not an event)
                await asyncio.sleep(0)
            await a.gateway.drain(grace_seconds=5)

        drain = asyncio.create_task(drain_mid_handshake())
        async with widget_call(http, a, await agents.token()) as call:
            hint = await call.wait_for("reconnect", within=3)
            assert hint["reason"] == "draining"
            await call.ws.close()
        async with asyncio.timeout(10):
            await drain
