"""Rate limits in Redis: per IP on public endpoints, per caller when authenticated; 429 with
Retry-After, and recovery when the window passes."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.api.settings import RateLimits
from tests.api.fixtures import ApiHarness, start_api

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"
WINDOW = 3


async def test_limits_hit_and_recover(api: ApiHarness) -> None:
    limits = RateLimits(
        public_per_minute=3,
        authenticated_per_minute=4,
        login_per_minute=2,
        window_seconds=WINDOW,
    )
    # The test client plays nginx: its X-Real-IP names the client.
    settings = api.settings.model_copy(
        update={"rate_limits": limits, "trusted_proxies": ("127.0.0.1",)}
    )
    async with start_api(settings) as limited:
        tenant = await limited.signup()
        agent = await limited.create_agent(tenant, allowed_origins=[SHOP])
        config = f"/api/v1/widget/agents/{agent['public_id']}"
        # Wait for a fresh window so the counts below are not split across two.
        await asyncio.sleep(WINDOW - time.time() % WINDOW)

        statuses = [(await limited.call("GET", config))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        async with limited.http.get(limited.url + config) as resp:
            assert resp.status == 429
            assert 1 <= int(resp.headers["Retry-After"]) <= WINDOW
            assert (await resp.json())["error"]["code"] == "rate_limited"
        # Another client address (as nginx reports it) has its own budget.
        other_ip = {"X-Real-IP": "203.0.113.7"}
        assert (await limited.call("GET", config, headers=other_ip))[0] == 200

        # Authenticated callers are counted per user, not per IP.
        me = [
            (await limited.call("GET", "/api/v1/me", headers=tenant.headers))[0] for _ in range(5)
        ]
        assert me == [200, 200, 200, 200, 429]

        deadline = time.monotonic() + 3 * WINDOW
        status = 429
        while status == 429 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status = (await limited.call("GET", config))[0]
        assert status == 200

        async with limited.http.get(limited.url + "/metrics") as resp:
            text = await resp.text()
        assert 'orbis_api_rate_limit_hits_total{scope="public"}' in text


async def test_login_is_limited_per_account_across_addresses(api: ApiHarness) -> None:
    limits = RateLimits(login_per_minute=3, window_seconds=60)
    # Each attempt from its own client address as a trusted proxy reports it: only the
    # per-account limit can stop them.
    settings = api.settings.model_copy(
        update={"rate_limits": limits, "trusted_proxies": ("127.0.0.1",)}
    )
    async with start_api(settings) as limited:
        tenant = await limited.signup(email="target@example.com")
        statuses = []
        for attempt in range(4):
            status, _ = await limited.call(
                "POST",
                "/api/v1/auth/login",
                # Spelled differently each time: the account is the same.
                json={
                    "email": tenant.email.upper() if attempt % 2 else tenant.email,
                    "password": "wrong password!",
                },
                headers={"X-Real-IP": f"198.51.100.{attempt}"},
            )
            statuses.append(status)
        assert statuses == [401, 401, 401, 429]


@pytest.mark.parametrize(
    ("trusted_proxies", "expected"),
    [
        # Sent straight to the API (as any container on the compose network can): X-Real-IP is
        # the sender's choice, so it is ignored and the sender's own address is limited.
        ((), [401, 401, 401, 429, 429]),
        (("10.0.0.0/8",), [401, 401, 401, 429, 429]),
        # From the configured proxy, named as orbisctl names nginx (a host name, resolved),
        # each reported address has its own budget.
        (("localhost",), [401] * 5),
    ],
    ids=["no-proxy", "other-network", "proxy-by-name"],
)
async def test_forwarded_addresses_count_only_from_the_configured_proxy(
    api: ApiHarness, trusted_proxies: tuple[str, ...], expected: list[int]
) -> None:
    limits = RateLimits(login_per_minute=3, window_seconds=60)
    settings = api.settings.model_copy(
        update={"rate_limits": limits, "trusted_proxies": trusted_proxies}
    )
    async with start_api(settings) as limited:
        statuses = []
        for attempt in range(5):
            status, _ = await limited.call(
                "POST",
                "/api/v1/auth/login",
                # A new account each time: only the per-address limit applies.
                json={"email": f"guess-{attempt}@example.com", "password": "wrong password!"},
                headers={"X-Real-IP": f"198.51.100.{attempt}"},
            )
            statuses.append(status)
        assert statuses == expected
