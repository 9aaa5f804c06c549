"""Signup, login, access tokens signed by the key ring, rotating refresh tokens."""

from __future__ import annotations

import asyncio
import time

import jwt
import psycopg
import pytest

from runtime.common.keyring import KeyRing
from tests.api.fixtures import PASSWORD, ApiHarness

pytestmark = pytest.mark.integration


async def test_signup_then_login_then_me(api: ApiHarness) -> None:
    tenant = await api.signup(email="Owner@Example.com", org_name="Acme")
    _, me = await api.call("GET", "/api/v1/me", headers=tenant.headers, expect=200)
    assert me["org"]["id"] == tenant.org_id
    assert me["user"]["email"] == "owner@example.com"
    _, login = await api.call(
        "POST",
        "/api/v1/auth/login",
        json={"email": "OWNER@example.com", "password": PASSWORD},
        expect=200,
    )
    assert login["user"]["id"] == tenant.user_id
    header = jwt.get_unverified_header(login["access_token"])
    ring = KeyRing.load(api.settings.jwt_keys_file)
    assert header["kid"] == ring.signing_key.kid


async def test_duplicate_email_and_wrong_password(api: ApiHarness) -> None:
    tenant = await api.signup()
    status, body = await api.call(
        "POST",
        "/api/v1/auth/signup",
        json={"org_name": "Other", "email": tenant.email.upper(), "password": PASSWORD},
    )
    assert (status, body["error"]["code"], body["error"]["field"]) == (409, "email_taken", "email")
    for email, password in ((tenant.email, "wrong password!"), ("nobody@example.com", PASSWORD)):
        status, body = await api.call(
            "POST", "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert (status, body["error"]["code"]) == (401, "invalid_credentials")


async def test_refresh_rotates_and_reuse_revokes_the_family(api: ApiHarness) -> None:
    tenant = await api.signup()
    first = tenant.refresh_token
    _, rotated = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": first}, expect=200
    )
    second = rotated["refresh_token"]
    assert second != first
    # The old token comes back (stolen copy): refused, and the whole family dies with it.
    status, body = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": first})
    assert (status, body["error"]["code"]) == (401, "token_reused")
    status, body = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": second})
    assert (status, body["error"]["code"]) == (401, "token_revoked")


async def test_logout_revokes_and_unknown_token_is_refused(api: ApiHarness) -> None:
    tenant = await api.signup()
    await api.call(
        "POST", "/api/v1/auth/logout", json={"refresh_token": tenant.refresh_token}, expect=204
    )
    status, body = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token}
    )
    assert (status, body["error"]["code"]) == (401, "token_revoked")
    status, body = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": "rt_made_up"}
    )
    assert (status, body["error"]["code"]) == (401, "token_invalid")


async def test_access_token_checks(api: ApiHarness) -> None:
    tenant = await api.signup()
    ring = KeyRing.load(api.settings.jwt_keys_file)
    key = ring.signing_key
    now = int(time.time())
    claims = {"sub": tenant.user_id, "org": tenant.org_id, "typ": "access"}
    expired = jwt.encode(
        {**claims, "iat": now - 100, "exp": now - 10}, key.secret, "HS256", {"kid": key.kid}
    )
    unknown_kid = jwt.encode(
        {**claims, "iat": now, "exp": now + 60}, key.secret, "HS256", {"kid": "k-nope"}
    )
    forged = jwt.encode(
        {**claims, "iat": now, "exp": now + 60}, b"x" * 32, "HS256", {"kid": key.kid}
    )
    cases = {
        expired: "token_expired",
        unknown_kid: "token_invalid",
        forged: "token_invalid",
        "garbage": "token_invalid",
    }
    for token, code in cases.items():
        status, body = await api.call(
            "GET", "/api/v1/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert (status, body["error"]["code"]) == (401, code)
    status, body = await api.call("GET", "/api/v1/me")
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_key_rotation_is_picked_up_without_restart(api: ApiHarness) -> None:
    tenant = await api.signup()
    path = api.settings.jwt_keys_file
    old_kid = KeyRing.load(path).signing_key.kid
    rotated = KeyRing.load(path).rotated()
    path.write_text(rotated.dumps())
    # Tokens signed by the old key still verify; new tokens carry the new kid.
    await api.call("GET", "/api/v1/me", headers=tenant.headers, expect=200)
    _, fresh = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token}, expect=200
    )
    new_kid = jwt.get_unverified_header(fresh["access_token"])["kid"]
    assert new_kid == rotated.signing_key.kid != old_kid


async def test_expired_refresh_token_is_refused(api: ApiHarness) -> None:
    tenant = await api.signup()
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        await conn.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    status, body = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token}
    )
    assert (status, body["error"]["code"]) == (401, "token_expired")


async def test_concurrent_use_of_one_refresh_token_lets_exactly_one_through(
    api: ApiHarness,
) -> None:
    tenant = await api.signup()
    results = await asyncio.gather(
        *(
            api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token})
            for _ in range(4)
        )
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 401, 401, 401]
