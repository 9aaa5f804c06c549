"""API keys: shown once, usable as bearer tokens, expiry and revocation, tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.migrations import load_migrations, migrate
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


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


async def new_key(api: ApiHarness, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    _, created = await api.call(
        "POST", "/api/v1/api-keys", json={"name": "k", **fields}, headers=headers, expect=201
    )
    assert isinstance(created, dict)
    return created


async def test_scopes_limit_what_a_key_may_do(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant)
    default = await new_key(api, tenant.headers)
    read_only = await new_key(api, tenant.headers, scopes=["read"])
    manager = await new_key(api, tenant.headers, scopes=["keys", "read", "keys"])
    assert default["scopes"] == ["read", "write"]  # full use of resources, no key management
    assert manager["scopes"] == ["keys", "read"]
    _, me = await api.call("GET", "/api/v1/me", headers=bearer(read_only), expect=200)
    assert me["scopes"] == ["read"]
    _, me = await api.call("GET", "/api/v1/me", headers=tenant.headers, expect=200)
    assert me["scopes"] == ["keys", "read", "write"]  # a user holds every scope

    # read: GETs only.
    await api.call("GET", "/api/v1/agents", headers=bearer(read_only), expect=200)
    await api.call("GET", "/api/v1/sessions", headers=bearer(read_only), expect=200)
    for method, path, body in (
        ("POST", "/api/v1/agents", {"name": "x", "instructions": "y"}),
        ("PATCH", f"/api/v1/agents/{agent['id']}", {"name": "renamed"}),
        ("DELETE", f"/api/v1/agents/{agent['id']}", None),
        ("DELETE", "/api/v1/end-users/visitor-1", None),
    ):
        status, error = await api.call(method, path, json=body, headers=bearer(read_only))
        assert (status, error["error"]["code"]) == (403, "insufficient_scope"), (method, path)
    # write, without keys: resources yes, API keys no (not even listing them).
    await api.call(
        "PATCH",
        f"/api/v1/agents/{agent['id']}",
        json={"name": "renamed"},
        headers=bearer(default),
        expect=200,
    )
    for method, path in (
        ("GET", "/api/v1/api-keys"),
        ("POST", "/api/v1/api-keys"),
        ("DELETE", f"/api/v1/api-keys/{read_only['id']}"),
    ):
        status, error = await api.call(method, path, json={"name": "x"}, headers=bearer(default))
        assert (status, error["error"]["code"]) == (403, "insufficient_scope"), (method, path)
    # keys + read: may manage keys, but not change resources.
    await api.call("GET", "/api/v1/api-keys", headers=bearer(manager), expect=200)
    status, _ = await api.call(
        "PATCH", f"/api/v1/agents/{agent['id']}", json={"name": "x"}, headers=bearer(manager)
    )
    assert status == 403


async def test_a_key_never_mints_more_than_it_holds(api: ApiHarness) -> None:
    """The attack: a key valid for 60 s minted a key that never expires and revoked others."""
    tenant = await api.signup()
    soon = datetime.now(UTC) + timedelta(seconds=60)
    short = await new_key(api, tenant.headers, scopes=["keys", "read"], expires_at=soon.isoformat())
    full = await new_key(api, tenant.headers, scopes=["keys", "read", "write"])

    # More scopes than its own: refused, naming the scope.
    status, error = await api.call(
        "POST",
        "/api/v1/api-keys",
        json={"name": "escalate", "scopes": ["read", "write"]},
        headers=bearer(short),
    )
    assert (status, error["error"]["code"], error["error"]["field"]) == (
        403,
        "scope_exceeds_own",
        "scopes",
    )
    assert "write" in error["error"]["message"]
    # A later expiry than its own: refused.
    later = (soon + timedelta(days=365)).isoformat()
    status, error = await api.call(
        "POST",
        "/api/v1/api-keys",
        json={"name": "outlive", "scopes": ["read"], "expires_at": later},
        headers=bearer(short),
    )
    assert (status, error["error"]["code"], error["error"]["field"]) == (
        403,
        "expiry_exceeds_own",
        "expires_at",
    )
    # No expiry asked for: it gets its creator's, not "never".
    child = await new_key(api, bearer(short), scopes=["read"])
    assert child["expires_at"] is not None
    assert datetime.fromisoformat(child["expires_at"]) == datetime.fromisoformat(
        short["expires_at"]
    )
    # An equal or narrower grant is fine.
    await new_key(api, bearer(short), scopes=["keys", "read"], expires_at=soon.isoformat())

    # Revoking: only keys whose scopes it holds itself.
    status, error = await api.call(
        "DELETE", f"/api/v1/api-keys/{full['id']}", headers=bearer(short)
    )
    assert (status, error["error"]["code"]) == (403, "scope_exceeds_own")
    await api.call("GET", "/api/v1/me", headers=bearer(full), expect=200)
    await api.call("DELETE", f"/api/v1/api-keys/{child['id']}", headers=bearer(short), expect=204)
    # A user may do everything.
    await api.call("DELETE", f"/api/v1/api-keys/{short['id']}", headers=tenant.headers, expect=204)


async def test_keys_from_before_scopes_keep_every_right(database_url: str) -> None:
    """Migration 0004 gives existing keys all three scopes (what they could do before), and
    the database refuses an unknown scope or none."""
    migrations = load_migrations(MIGRATIONS_DIR)
    before = [m for m in migrations if m.version < 4]
    await migrate(database_url, before)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO orgs (name, referral_code) VALUES ('o', 'CODE234567')")
        await conn.execute(
            "INSERT INTO api_keys (org_id, name, prefix, key_hash, created_by) "
            "SELECT id, 'old', 'ov_old', '\\x00', 'user:x' FROM orgs"
        )
        await migrate(database_url, migrations)
        cursor = await conn.execute("SELECT scopes FROM api_keys")
        assert await cursor.fetchall() == [(["read", "write", "keys"],)]
        for bad in ("{admin}", "{}"):
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute("UPDATE api_keys SET scopes = %s", (bad,))
