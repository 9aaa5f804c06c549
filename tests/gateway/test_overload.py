"""An overloaded gateway turns new calls away and keeps serving the calls it has.

The overload is real: the test stalls the event loop the gateway runs on (it shares the test's
loop) with blocking work, as a process short of CPU would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import pytest

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.loop_lag import WINDOW_SAMPLES
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    FRAME_BYTES,
    Agents,
    RunningGateway,
    eventually,
    handshake_error,
    metric,
    running_gateway,
    widget_call,
)

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis (the API)

SHOP = "https://shop.example"


@contextmanager
def stalled_loop(*, block_seconds: float = 0.05, every_seconds: float = 0.01) -> Iterator[None]:
    """Block the running loop for `block_seconds` out of every `block + every` seconds."""
    loop = asyncio.get_running_loop()
    handle: asyncio.Handle | None = None

    def block() -> None:
        nonlocal handle
        time.sleep(block_seconds)
        handle = loop.call_later(every_seconds, block)

    handle = loop.call_soon(block)
    try:
        yield
    finally:
        handle.cancel()


async def late_samples(http: aiohttp.ClientSession, gw: RunningGateway) -> float:
    """Lag samples over 10 ms since start."""
    lag = "orbis_gateway_event_loop_lag_seconds"
    return await metric(http, gw, lag + "_count") - await metric(
        http, gw, lag + "_bucket", le="0.01"
    )


async def has_late_window(http: aiohttp.ClientSession, gw: RunningGateway) -> bool:
    return await late_samples(http, gw) >= WINDOW_SAMPLES


async def overloaded(http: aiohttp.ClientSession, gw: RunningGateway, value: int) -> bool:
    return await metric(http, gw, "orbis_gateway_overloaded") == value


async def test_a_late_event_loop_refuses_new_calls_and_keeps_the_ones_it_has(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    limited = settings.model_copy(update={"max_loop_lag_seconds": 0.02})
    waiting = await agents.token()
    async with running_gateway(limited, gemini_ssl_context=emulator.ssl_context()) as gw:
        async with widget_call(http, gw, await agents.token()) as call:
            await call.wait_for("session.started")
            with stalled_loop():
                await eventually(lambda: overloaded(http, gw, 1))
                assert await handshake_error(http, gw, waiting, origin=SHOP) == (503, "server_busy")
                # Still ready (an orchestrator must not replace it), and says why it refuses.
                async with http.get(f"{gw.url}/readyz") as response:
                    assert response.status == 200
                    assert await response.json() == {
                        "status": "ready",
                        "calls": 1,
                        "overloaded": True,
                        "refused_calls": 1,
                    }
                # The call it has goes on: its audio is still taken.
                await call.ws.send_bytes(b"\x00" * FRAME_BYTES)
            await eventually(lambda: overloaded(http, gw, 0))
            assert not call.ws.closed and not call.of_type("error")
            assert await metric(http, gw, "orbis_gateway_event_loop_lag_seconds_count") > 10
        # The refused token was not redeemed: it works once the loop keeps time again.
        async with widget_call(http, gw, waiting) as call:
            await call.wait_for("session.started")


async def test_with_no_lag_limit_a_late_loop_still_takes_calls(
    settings: GatewaySettings, emulator: EmulatorHandle, agents: Agents, http: aiohttp.ClientSession
) -> None:
    unlimited = settings.model_copy(update={"max_loop_lag_seconds": 0.0})
    async with running_gateway(unlimited, gemini_ssl_context=emulator.ssl_context()) as gw:
        with stalled_loop():
            # As many late samples as the window holds: with a limit, it would be overloaded.
            await eventually(lambda: has_late_window(http, gw))
            assert not gw.gateway.loop_lag.overloaded
            async with widget_call(http, gw, await agents.token()) as call:
                await call.wait_for("session.started")
