"""Logout revokes the access token at once (not up to 15 minutes later): a deny-list by token
id and by login session in Redis, kept until the token would expire, checked on every request."""

from __future__ import annotations

import time

import jwt
import pytest
import redis

from runtime.api.revocation import family_key, token_key
from runtime.common.keyring import KeyRing
from tests.api.fixtures import PASSWORD, ApiHarness, Tenant
from tests.services import RedisServer

pytestmark = pytest.mark.integration


def claims_of(api: ApiHarness, access_token: str) -> dict[str, object]:
    secret = KeyRing.load(api.settings.jwt_keys_file).signing_key.secret
    decoded: dict[str, object] = jwt.decode(access_token, secret, algorithms=["HS256"])
    return decoded


async def me_status(api: ApiHarness, access_token: str) -> tuple[int, str | None]:
    status, body = await api.call(
        "GET", "/api/v1/me", headers={"Authorization": f"Bearer {access_token}"}
    )
    return status, (body or {}).get("error", {}).get("code")


async def login(api: ApiHarness, tenant: Tenant) -> dict[str, str]:
    _, body = await api.call(
        "POST",
        "/api/v1/auth/login",
        json={"email": tenant.email, "password": PASSWORD},
        expect=200,
    )
    return {"access_token": body["access_token"], "refresh_token": body["refresh_token"]}


async def test_logout_revokes_the_access_token_now(api: ApiHarness) -> None:
    tenant = await api.signup()
    other_session = await login(api, tenant)
    assert await me_status(api, tenant.access_token) == (200, None)
    await api.call(
        "POST",
        "/api/v1/auth/logout",
        json={"refresh_token": tenant.refresh_token},
        headers=tenant.headers,
        expect=204,
    )
    assert await me_status(api, tenant.access_token) == (401, "token_revoked")
    # Another login of the same user is another session: untouched.
    assert await me_status(api, other_session["access_token"]) == (200, None)
    # The deny-list entries live until the token would have expired, not forever.
    claims = claims_of(api, tenant.access_token)
    client = redis.Redis.from_url(api.settings.redis_url)
    try:
        ttl = client.ttl(token_key(str(claims["jti"])))
        assert 0 < ttl <= int(str(claims["exp"])) - int(time.time()) + 2
        family_ttl = client.ttl(family_key(str(claims["fam"])))
        assert 0 < family_ttl <= api.settings.access_token_seconds + 1
    finally:
        client.close()


async def test_logout_with_the_refresh_token_alone_revokes_the_session_s_access_tokens(
    api: ApiHarness,
) -> None:
    tenant = await api.signup()
    # A refresh in between: the access tokens of both generations belong to the session.
    _, refreshed = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token}, expect=200
    )
    await api.call(
        "POST",
        "/api/v1/auth/logout",
        json={"refresh_token": refreshed["refresh_token"]},
        expect=204,
    )
    assert await me_status(api, tenant.access_token) == (401, "token_revoked")
    assert await me_status(api, refreshed["access_token"]) == (401, "token_revoked")


async def test_a_reused_refresh_token_also_revokes_the_session_s_access_tokens(
    api: ApiHarness,
) -> None:
    tenant = await api.signup()
    _, refreshed = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token}, expect=200
    )
    status, _ = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": tenant.refresh_token}
    )
    assert status == 401
    assert await me_status(api, refreshed["access_token"]) == (401, "token_revoked")


async def test_a_token_from_before_token_ids_still_works_until_it_expires(api: ApiHarness) -> None:
    tenant = await api.signup()
    key = KeyRing.load(api.settings.jwt_keys_file).signing_key
    now = int(time.time())
    legacy = jwt.encode(
        {"sub": tenant.user_id, "org": tenant.org_id, "typ": "access", "iat": now, "exp": now + 60},
        key.secret,
        "HS256",
        {"kid": key.kid},
    )
    assert await me_status(api, legacy) == (200, None)


async def test_redis_down_fails_open_for_requests_and_logout_says_so(
    api: ApiHarness, redis_srv: RedisServer
) -> None:
    tenant = await api.signup()
    redis_srv.stop()
    try:
        # The check is protection, not a dependency: a valid token keeps working.
        assert await me_status(api, tenant.access_token) == (200, None)
        # Logout does not claim a revocation it could not record; the client retries.
        status, body = await api.call(
            "POST",
            "/api/v1/auth/logout",
            json={"refresh_token": tenant.refresh_token},
            headers=tenant.headers,
        )
        assert (status, body["error"]["code"]) == (503, "revocation_unavailable")
    finally:
        redis_srv.start()
    await api.call(
        "POST",
        "/api/v1/auth/logout",
        json={"refresh_token": tenant.refresh_token},
        headers=tenant.headers,
        expect=204,
    )
    assert await me_status(api, tenant.access_token) == (401, "token_revoked")
