"""Dependencies failing: Redis down (limits fail open, not ready), PostgreSQL down (clean 503,
recovers), schema not migrated (not ready). Real servers are stopped and restarted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from healthchecks.probes import DEFAULT_TIMEOUT as PROBE_TIMEOUT
from runtime.api.app import create_app
from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.migrations import load_migrations
from tests.api.fixtures import ApiHarness, api_settings, start_api, write_keyring
from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


async def _eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 15.0) -> bool:
    """Poll a recovery condition, bounded in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_redis_down_fails_open_and_is_not_ready(
    api: ApiHarness, redis_srv: RedisServer
) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP])
    config = f"/api/v1/widget/agents/{agent['public_id']}"
    redis_srv.stop()
    try:
        # Rate limiting is protection, not a dependency: the widget keeps working.
        await api.call("GET", config, expect=200)
        status, body = await api.call("GET", "/readyz")
        assert status == 503
        assert body["checks"]["redis"].startswith("unavailable")
    finally:
        redis_srv.start()

    async def ready() -> bool:
        return (await api.call("GET", "/readyz"))[0] == 200

    assert await _eventually(ready)


async def test_database_down_is_a_clean_503_and_recovers(
    api: ApiHarness, pg_server: PostgresServer
) -> None:
    quick = api.settings.model_copy(update={"db_pool_timeout_seconds": 1.0})
    async with start_api(quick) as quick_api:
        tenant = await quick_api.signup()
        pg_server.stop()
        try:
            async with quick_api.http.get(
                quick_api.url + "/api/v1/agents", headers=tenant.headers
            ) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "5"
                assert (await resp.json())["error"]["code"] == "database_unavailable"
            assert (await quick_api.call("GET", "/readyz"))[0] == 503
        finally:
            pg_server.start()

        async def serving() -> bool:
            status, _ = await quick_api.call("GET", "/api/v1/agents", headers=tenant.headers)
            return status == 200

        assert await _eventually(serving)


async def test_readiness_with_everything_down_answers_within_the_health_probe_timeout(
    api: ApiHarness, pg_server: PostgresServer, redis_srv: RedisServer
) -> None:
    """The container probe gives /readyz 3 s; a slower answer would show as a probe timeout
    instead of naming the dependency that is down."""
    pg_server.stop()
    redis_srv.stop()
    try:
        async with api.http.get(
            api.url + "/readyz", timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
        ) as resp:
            assert resp.status == 503
            checks = (await resp.json())["checks"]
        assert checks["database"].startswith("unavailable")
        assert checks["redis"].startswith("unavailable")
    finally:
        pg_server.start()
        redis_srv.start()

    async def ready() -> bool:
        return (await api.call("GET", "/readyz"))[0] == 200

    assert await _eventually(ready)


async def test_unmigrated_database_is_not_ready(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    app = create_app(api_settings(database_url, redis_url, write_keyring(tmp_path)))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as resp,
        ):
            assert resp.status == 503
            body = await resp.json()
        versions = [migration.version for migration in load_migrations(MIGRATIONS_DIR)]
        assert body["checks"] == {"database": f"migrations pending: {versions}", "redis": "ok"}
    finally:
        await runner.cleanup()
