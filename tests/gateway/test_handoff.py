"""A draining gateway hands its calls to another instance: same call, same model session."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    ORIGIN,
    Agents,
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
        running_gateway(replace(settings, instance_id="gw-a"), gemini_ssl_context=trust) as a,
        running_gateway(replace(settings, instance_id="gw-b"), gemini_ssl_context=trust) as b,
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
