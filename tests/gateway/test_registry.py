"""Call state in Redis: any instance lists and ends live calls; limits survive crashes and a
Redis restart."""

from __future__ import annotations

import aiohttp
import pytest
import redis.asyncio as aioredis

from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.redis_state import (
    RENEW_BATCH,
    CallRecord,
    CallState,
    LeaseOutcome,
    list_live_calls,
    request_call_end,
)
from runtime.gateway.settings import GatewaySettings
from tests.gateway.support import (
    Agents,
    eventually,
    running_gateway,
    speech_then_silence,
    widget_call,
)
from tests.services import RedisServer

pytestmark = pytest.mark.integration  # real PostgreSQL and Redis (the API)


async def test_any_instance_lists_live_calls_and_ends_one(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    agents: Agents,
    http: aiohttp.ClientSession,
    redis_url: str,
) -> None:
    other_instance = aioredis.Redis.from_url(redis_url)
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, await agents.token()) as call,
    ):
        started = await call.wait_for("session.started")
        (live,) = await list_live_calls(other_instance)
        assert live["call_id"] == started["call_id"]
        assert live["instance_id"] == "gw-test"
        assert live["org_id"] == agents.tenant.org_id
        await request_call_end(other_instance, started["call_id"], reason="operator")
        assert (await call.wait_for("session.ended"))["reason"] == "ended_remotely"
        assert await call.wait_closed() == 1000
    assert await list_live_calls(other_instance) == []
    assert (await agents.call_row(started["call_id"]))["end_reason"] == "ended_remotely"
    await other_instance.aclose()


async def test_redis_restart_mid_call_keeps_the_call_and_rebuilds_the_registry(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    agents: Agents,
    http: aiohttp.ClientSession,
    redis_url: str,
    redis_srv: RedisServer,
) -> None:
    observer = aioredis.Redis.from_url(redis_url)

    async def registered(count: int) -> bool:
        try:
            return len(await list_live_calls(observer)) == count
        except (aioredis.ConnectionError, OSError):
            return False

    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, await agents.token()) as call,
    ):
        await call.wait_for("session.started")
        redis_srv.stop()
        redis_srv.start()  # empty: the test server keeps nothing on disk
        # The call goes on, and the next heartbeat writes its lease back.
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete")
        await eventually(lambda: registered(1))
        async with widget_call(http, gw, await agents.token()) as second:
            await second.wait_for("session.started")
            await eventually(lambda: registered(2))
        assert call.of_type("error") == []
    await observer.aclose()


async def test_a_crashed_instance_frees_its_slots_when_its_leases_lapse(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    state = CallState(client, lease_seconds=1)

    def record(call_id: str) -> CallRecord:
        return CallRecord(call_id, "crashed-instance", "agent-1", "org-1", 0.0)

    assert await state.acquire(record("a"), agent_limit=1, org_limit=5) is LeaseOutcome.OK
    assert await state.acquire(record("b"), agent_limit=1, org_limit=5) is LeaseOutcome.AGENT_LIMIT
    assert await state.acquire(record("c"), agent_limit=5, org_limit=1) is LeaseOutcome.ORG_LIMIT

    async def slot_free() -> bool:
        outcome = await state.acquire(record("b"), agent_limit=1, org_limit=5)
        return outcome is LeaseOutcome.OK

    # "a"'s instance never renews: after the lease (1 s) its slot is someone else's.
    await eventually(slot_free, within=5)
    assert [call["call_id"] for call in await list_live_calls(client)] == ["b"]
    await client.aclose()


async def test_a_heartbeat_renews_every_batch_and_finds_end_requests_in_each(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    state = CallState(client, lease_seconds=30)
    records = [
        CallRecord(f"call-{index}", "gw-1", "agent-1", "org-1", 0.0)
        for index in range(2 * RENEW_BATCH + 5)
    ]
    # One end request in each of the three pipelines.
    asked = {"call-0", f"call-{RENEW_BATCH + 1}", f"call-{2 * RENEW_BATCH + 4}"}
    for call_id in asked:
        await request_call_end(client, call_id, reason="test")
    assert await state.renew(records) == asked
    assert len(await list_live_calls(client)) == len(records)
    await client.aclose()


async def test_admin_routes_list_and_end_calls_of_any_instance(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    agents: Agents,
    http: aiohttp.ClientSession,
) -> None:
    trust = emulator.ssl_context()
    headers = {"Authorization": f"Bearer {agents.api.internal_token}"}
    async with (
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-a"}), gemini_ssl_context=trust
        ) as a,
        running_gateway(
            settings.model_copy(update={"instance_id": "gw-b"}), gemini_ssl_context=trust
        ) as b,
        widget_call(http, b, await agents.token()) as call,
    ):
        started = await call.wait_for("session.started")
        async with http.get(f"{a.url}/admin/calls") as response:
            assert response.status == 401
        async with http.get(f"{a.url}/admin/calls", headers=headers) as response:
            (live,) = (await response.json())["calls"]
        assert (live["call_id"], live["instance_id"]) == (started["call_id"], "gw-b")
        missing = f"{a.url}/admin/calls/00000000-0000-0000-0000-000000000000/end"
        async with http.post(missing, headers=headers) as response:
            assert response.status == 404
        end = f"{a.url}/admin/calls/{started['call_id']}/end"
        async with http.post(end, headers=headers) as response:
            assert response.status == 202
        assert (await call.wait_for("session.ended"))["reason"] == "ended_remotely"
