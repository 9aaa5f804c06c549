"""A real API server for tests: fresh migrated database, real Redis, free loopback port.

Other test packages (the gateway's) reuse it by importing the fixture into their conftest::

    from tests.api.fixtures import api  # noqa: F401  (pytest finds fixtures by name)

    async def test_call(api: ApiHarness) -> None:
        tenant = await api.signup()
        agent = await api.create_agent(tenant, allowed_origins=["https://shop.example"])
        session = await api.widget_session(agent["public_id"], origin="https://shop.example")
        # session["token"] is a widget session token; api.internal_token authenticates the
        # gateway's calls to api.url + "/internal/...".

Or, with custom settings, `async with start_api(api_settings(database_url, redis_url,
keys_file, ...)) as api:`.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runtime.api.app import create_app
from runtime.api.serving import ApiRunner
from runtime.api.settings import MIGRATIONS_DIR, ApiSettings, RateLimits
from runtime.common.keyring import new_keyring
from runtime.common.migrations import load_migrations, migrate

INTERNAL_TOKEN = "internal-test-token-0123456789abcdef"
PASSWORD = "correct horse battery"
# High enough that no functional test trips them; rate-limit tests lower them.
GENEROUS_LIMITS = RateLimits(
    public_per_minute=100_000, authenticated_per_minute=100_000, login_per_minute=100_000
)


def write_keyring(directory: Path) -> Path:
    path = directory / "jwt_keys.json"
    path.write_text(new_keyring().dumps(), encoding="utf-8")
    path.chmod(0o600)
    return path


def api_settings(
    database_url: str, redis_url: str, jwt_keys_file: Path, **overrides: Any
) -> ApiSettings:
    """Settings for a test API: no environment variables involved."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "jwt_keys_file": jwt_keys_file,
        "internal_tokens": (INTERNAL_TOKEN,),
        "public_url": "https://voice.test",
        "host": "127.0.0.1",
        "port": 0,
        "rate_limits": GENEROUS_LIMITS,
        "tool_allow_private_networks": True,
        "db_pool_max_size": 5,
    }
    return ApiSettings(**(values | overrides))


@dataclass
class Tenant:
    org_id: str
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class ApiHarness:
    url: str
    internal_token: str
    settings: ApiSettings
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def internal_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.internal_token}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        expect: int | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or None). `expect` asserts the status."""
        async with self.http.request(method, self.url + path, json=json, headers=headers) as resp:
            body = await resp.json() if resp.content_type == "application/json" else None
            if expect is not None:
                assert resp.status == expect, (resp.status, body)
            return resp.status, body

    async def signup(self, email: str | None = None, org_name: str = "Acme") -> Tenant:
        email = email or f"owner-{secrets.token_hex(4)}@example.com"
        _, body = await self.call(
            "POST",
            "/api/v1/auth/signup",
            json={"org_name": org_name, "email": email, "password": PASSWORD},
            expect=201,
        )
        return Tenant(
            org_id=body["org"]["id"],
            user_id=body["user"]["id"],
            email=email,
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
        )

    async def create_agent(self, tenant: Tenant, **fields: Any) -> dict[str, Any]:
        payload = {"name": "Front desk", "instructions": "Be helpful.", **fields}
        _, body = await self.call(
            "POST", "/api/v1/agents", json=payload, headers=tenant.headers, expect=201
        )
        assert isinstance(body, dict)
        return body

    async def widget_session(
        self, public_id: str, *, origin: str, end_user_id: str | None = None
    ) -> dict[str, Any]:
        payload = {"end_user_id": end_user_id} if end_user_id else {}
        _, body = await self.call(
            "POST",
            f"/api/v1/widget/agents/{public_id}/sessions",
            json=payload,
            headers={"Origin": origin},
            expect=201,
        )
        assert isinstance(body, dict)
        return body

    async def start_call(self, token: str, *, origin: str) -> dict[str, Any]:
        _, body = await self.call(
            "POST",
            "/internal/calls",
            json={"token": token, "origin": origin, "instance_id": "test-gateway"},
            headers=self.internal_headers,
            expect=201,
        )
        assert isinstance(body, dict)
        return body


@asynccontextmanager
async def start_api(settings: ApiSettings) -> AsyncIterator[ApiHarness]:
    """Migrate the settings' database, then serve the API on a free loopback port."""
    await migrate(settings.database_conninfo, load_migrations(MIGRATIONS_DIR))
    app = create_app(settings)
    runner = ApiRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            yield ApiHarness(
                url=f"http://{host}:{port}",
                internal_token=INTERNAL_TOKEN,
                settings=settings,
                app=app,
                http=http,
            )
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[ApiHarness]:
    """The API on a fresh database, with a known internal token (`INTERNAL_TOKEN`)."""
    settings = api_settings(database_url, redis_url, write_keyring(tmp_path))
    async with start_api(settings) as harness:
        yield harness
