"""API keys: shown once, usable as bearer tokens, expiry and revocation, tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration


async def test_key_authenticates_and_records_last_use(api: ApiHarness) -> None:
    tenant = await api.signup()
    _, created = await api.call(
        "POST", "/api/v1/api-keys", json={"name": "ci"}, headers=tenant.headers, expect=201
    )
    key = created["key"]
    assert key.startswith(created["prefix"] + "_") and created["prefix"].startswith("ov_")
    key_headers = {"Authorization": f"Bearer {key}"}
    _, me = await api.call("GET", "/api/v1/me", headers=key_headers, expect=200)
    assert (me["org"]["id"], me["user"], me["api_key_id"]) == (tenant.org_id, None, created["id"])
    # The key works for tenant resources, and the secret is never listed again.
    await api.create_agent(tenant)
    _, agents = await api.call("GET", "/api/v1/agents", headers=key_headers, expect=200)
    assert len(agents["items"]) == 1
    _, listed = await api.call("GET", "/api/v1/api-keys", headers=tenant.headers, expect=200)
    assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert "key" not in listed["items"][0]
    assert listed["items"][0]["last_used_at"] is not None
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        cursor = await conn.execute("SELECT key_hash FROM api_keys")
        (stored,) = await cursor.fetchone() or (None,)
    assert key.encode() not in bytes(stored)


async def test_revoked_and_expired_keys_are_refused(api: ApiHarness) -> None:
    tenant = await api.signup()
    _, revoked = await api.call(
        "POST", "/api/v1/api-keys", json={"name": "old"}, headers=tenant.headers, expect=201
    )
    await api.call(
        "DELETE", f"/api/v1/api-keys/{revoked['id']}", headers=tenant.headers, expect=204
    )
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    _, expiring = await api.call(
        "POST",
        "/api/v1/api-keys",
        json={"name": "temp", "expires_at": soon},
        headers=tenant.headers,
        expect=201,
    )
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
            (expiring["id"],),
        )
    for key, code in (
        (revoked["key"], "api_key_revoked"),
        (expiring["key"], "api_key_expired"),
        ("ov_00000000_unknown", "api_key_invalid"),
    ):
        status, body = await api.call(
            "GET", "/api/v1/me", headers={"Authorization": f"Bearer {key}"}
        )
        assert (status, body["error"]["code"]) == (401, code)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    status, body = await api.call(
        "POST",
        "/api/v1/api-keys",
        json={"name": "x", "expires_at": past},
        headers=tenant.headers,
    )
    assert (status, body["error"]["field"]) == (422, "expires_at")


async def test_keys_are_tenant_isolated(api: ApiHarness) -> None:
    alice, mallory = await api.signup(), await api.signup()
    _, created = await api.call(
        "POST", "/api/v1/api-keys", json={"name": "a"}, headers=alice.headers, expect=201
    )
    status, body = await api.call(
        "DELETE", f"/api/v1/api-keys/{created['id']}", headers=mallory.headers
    )
    assert (status, body["error"]["code"]) == (404, "api_key_not_found")
    _, listed = await api.call("GET", "/api/v1/api-keys", headers=mallory.headers, expect=200)
    assert listed["items"] == []
    # Alice's key sees only Alice's org.
    await api.create_agent(mallory)
    _, agents = await api.call(
        "GET", "/api/v1/agents", headers={"Authorization": f"Bearer {created['key']}"}, expect=200
    )
    assert agents["items"] == []
