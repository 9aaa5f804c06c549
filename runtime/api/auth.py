"""Authenticating callers: tenants (access token or API key) and the gateway (service token)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from aiohttp import web

from runtime.api import keys
from runtime.api.errors import Unauthorized
from runtime.api.principal import Principal, Scope
from runtime.api.security import token_digest, verify_access_token

API_KEY_PREFIX = "ov_"


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return token.strip()


async def authenticate_tenant(request: web.Request) -> Principal:
    token = bearer_token(request)
    if token.startswith(API_KEY_PREFIX):
        return await _api_key_principal(request, token)
    claims = verify_access_token(request.app[keys.KEYRING].current(), token)
    if await request.app[keys.REVOCATIONS].is_revoked(jti=claims.jti, family_id=claims.family_id):
        raise Unauthorized("this access token was revoked; log in again", code="token_revoked")
    return Principal(org_id=claims.org_id, user_id=claims.user_id)


async def _api_key_principal(request: web.Request, token: str) -> Principal:
    async with request.app[keys.DB].autocommit() as tx:
        row = await tx.one(
            "SELECT id, org_id, scopes, expires_at, revoked_at FROM api_keys WHERE key_hash = %s",
            (token_digest(token),),
        )
        if row is None:
            raise Unauthorized("unknown API key", code="api_key_invalid")
        if row["revoked_at"] is not None:
            raise Unauthorized("this API key was revoked", code="api_key_revoked")
        if row["expires_at"] is not None and row["expires_at"] <= datetime.now(UTC):
            raise Unauthorized("this API key has expired", code="api_key_expired")
        # At most one write a minute per key: last-used is informational.
        await tx.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = %s "
            "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            (row["id"],),
        )
    return Principal(
        org_id=str(row["org_id"]),
        api_key_id=str(row["id"]),
        scopes=frozenset(Scope(scope) for scope in row["scopes"]),
        expires_at=row["expires_at"],
    )


def authenticate_internal(request: web.Request) -> None:
    token = bearer_token(request).encode()
    accepted = request.app[keys.SETTINGS].internal_tokens
    # Compare against every accepted token (no early exit) in constant time.
    matches = [
        hmac.compare_digest(token, candidate.get_secret_value().encode()) for candidate in accepted
    ]
    if not any(matches):
        raise Unauthorized("invalid internal service token")


async def client_ip(request: web.Request) -> str:
    """The client address for per-IP limits: the connection's own, or what a configured
    proxy (nginx) says it is (runtime.api.proxies). X-Real-IP from any other peer, on the
    compose network or not, is ignored."""
    return await request.app[keys.PROXIES].client_address(request.remote, request.headers)
