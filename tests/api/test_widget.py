"""The public widget API and the gateway's redemption of widget session tokens."""

from __future__ import annotations

import psycopg
import pytest

from runtime.api import keys
from runtime.api.housekeeping import purge_expired
from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


async def test_config_sends_cors_only_to_allowed_origins(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, greeting="Hi!", allowed_origins=[SHOP])
    path = f"/api/v1/widget/agents/{agent['public_id']}"
    async with api.http.get(api.url + path, headers={"Origin": SHOP}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
        assert await resp.json() == {
            "public_id": agent["public_id"],
            "name": agent["name"],
            "greeting": "Hi!",
            "voice": "Puck",
            "language": "en-US",
        }
    async with api.http.get(api.url + path, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with api.http.options(api.url + path + "/sessions", headers={"Origin": SHOP}) as resp:
        assert resp.status == 204
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    status, body = await api.call("GET", "/api/v1/widget/agents/agt_nope")
    assert (status, body["error"]["code"]) == (404, "agent_not_found")


async def test_session_token_is_single_use_and_origin_bound(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP], max_session_seconds=300)
    status, body = await api.call(
        "POST",
        f"/api/v1/widget/agents/{agent['public_id']}/sessions",
        json={},
        headers={"Origin": "https://evil.example"},
    )
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
    session = await api.widget_session(agent["public_id"], origin=SHOP)
    assert session["gateway_url"] == "wss://voice.test/ws/call"
    assert session["token"].startswith("wst_")

    status, body = await api.call(
        "POST",
        "/internal/calls",
        json={"token": session["token"], "origin": "https://evil.example", "instance_id": "g1"},
        headers=api.internal_headers,
    )
    assert (status, body["error"]["code"]) == (403, "origin_not_allowed")

    started = await api.start_call(session["token"], origin=SHOP)
    runtime = started["agent"]
    assert started["org_id"] == tenant.org_id == runtime["org_id"]
    assert runtime["id"] == agent["id"]
    assert runtime["max_session_seconds"] == 300
    assert runtime["org_max_concurrent_calls"] == 20
    assert set(runtime) == {
        "id",
        "public_id",
        "org_id",
        "name",
        "instructions",
        "voice",
        "language",
        "model",
        "greeting",
        "max_session_seconds",
        "tools",
        "allowed_origins",
        "max_concurrent_calls",
        "org_max_concurrent_calls",
    }
    status, body = await api.call(
        "POST",
        "/internal/calls",
        json={"token": session["token"], "origin": SHOP, "instance_id": "g1"},
        headers=api.internal_headers,
    )
    assert (status, body["error"]["code"]) == (401, "token_invalid")


async def test_expired_or_unknown_token_is_refused(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP])
    session = await api.widget_session(agent["public_id"], origin=SHOP)
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        await conn.execute("UPDATE widget_sessions SET expires_at = now() - interval '1 second'")
    for token in (session["token"], "wst_unknown"):
        status, body = await api.call(
            "POST",
            "/internal/calls",
            json={"token": token, "origin": SHOP, "instance_id": "g1"},
            headers=api.internal_headers,
        )
        assert (status, body["error"]["code"]) == (401, "token_invalid")


async def test_internal_endpoints_need_the_service_token(api: ApiHarness) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, body = await api.call(
            "POST",
            "/internal/calls",
            json={"token": "x", "origin": SHOP, "instance_id": "g"},
            headers=headers,
        )
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    # A tenant's own access token is no service token either.
    tenant = await api.signup()
    status, _ = await api.call(
        "POST", "/internal/audit", json={"action": "x"}, headers=tenant.headers
    )
    assert status == 401


async def test_session_errors_carry_cors_and_text_plain_body_is_read(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP])
    sessions = f"{api.url}/api/v1/widget/agents/{agent['public_id']}/sessions"
    evil = "https://evil.example"
    async with api.http.post(sessions, headers={"Origin": evil}) as resp:
        assert resp.status == 403
        assert resp.headers["Access-Control-Allow-Origin"] == evil
        assert resp.headers["Vary"] == "Origin"
        assert (await resp.json())["error"]["code"] == "origin_not_allowed"
    missing = f"{api.url}/api/v1/widget/agents/agt_missing/sessions"
    async with api.http.post(missing, headers={"Origin": SHOP}) as resp:
        assert resp.status == 404
        assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    # A simple request: the visitor id arrives as text/plain JSON.
    async with api.http.post(
        sessions,
        data='{"end_user_id": "visitor-9"}',
        headers={"Origin": SHOP, "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 201
        token = (await resp.json())["token"]
    await api.start_call(token, origin=SHOP)
    _, listed = await api.call(
        "GET", "/api/v1/sessions?end_user_id=visitor-9", headers=tenant.headers, expect=200
    )
    assert len(listed["items"]) == 1


async def test_housekeeping_purges_only_long_expired_tokens(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP])
    fresh = await api.widget_session(agent["public_id"], origin=SHOP)
    await api.widget_session(agent["public_id"], origin=SHOP)
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        await conn.execute(
            "UPDATE widget_sessions SET expires_at = now() - interval '2 hours' "
            "WHERE id = (SELECT id FROM widget_sessions ORDER BY created_at DESC LIMIT 1)"
        )
        await conn.execute("UPDATE refresh_tokens SET expires_at = now() - interval '2 days'")
    purged = await purge_expired(api.app[keys.DB])
    assert purged == {"widget_sessions": 1, "refresh_tokens": 1}
    await api.start_call(fresh["token"], origin=SHOP)
