"""Org API keys: stored hashed, shown once, with a prefix to recognise them, scopes, optional
expiry, last-used time, and revocation. Used as `Authorization: Bearer ov_…`.

Managing keys takes the `keys` scope (users hold every scope). A key never hands out more than
it holds: a key it creates has a subset of its scopes and expires no later than it does, and
it can revoke only keys whose scopes are a subset of its own."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from aiohttp import web

from runtime.api import audit, keys
from runtime.api.auth import API_KEY_PREFIX
from runtime.api.errors import Forbidden, Invalid, NotFound
from runtime.api.models.api_keys import ApiKeyCreatedOut, ApiKeyIn, ApiKeyList, ApiKeyOut
from runtime.api.principal import Scope
from runtime.api.routing import Auth, Route, json_response, read_body, uuid_param
from runtime.api.security import token_digest


async def list_api_keys(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    async with request.app[keys.DB].transaction() as tx:
        rows = await tx.all(
            "SELECT id, name, prefix, scopes, created_by, created_at, expires_at, "
            "last_used_at, revoked_at FROM api_keys WHERE org_id = %s ORDER BY created_at, id",
            (principal.org_id,),
        )
    return json_response(ApiKeyList(items=[ApiKeyOut.model_validate(row) for row in rows]))


async def create_api_key(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    body = await read_body(request, ApiKeyIn)
    expires_at = body.expires_at
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            raise Invalid("expires_at: must be in the future", field="expires_at")
    scopes = set(body.scopes)
    if not scopes <= principal.scopes:
        lacking = ", ".join(sorted(scopes - principal.scopes))
        raise Forbidden(
            f"scopes: this key cannot grant scopes it does not hold ({lacking})",
            code="scope_exceeds_own",
            field="scopes",
        )
    if principal.expires_at is not None:
        if expires_at is None:
            expires_at = principal.expires_at
        elif expires_at > principal.expires_at:
            raise Forbidden(
                "expires_at: a key cannot create a key that outlives it "
                f"(this one expires at {principal.expires_at.isoformat()})",
                code="expiry_exceeds_own",
                field="expires_at",
            )
    prefix = API_KEY_PREFIX + secrets.token_hex(4)
    key = f"{prefix}_{secrets.token_urlsafe(32)}"
    async with request.app[keys.DB].transaction() as tx:
        row = await tx.one(
            "INSERT INTO api_keys "
            "(org_id, name, prefix, key_hash, created_by, expires_at, scopes) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id, name, prefix, scopes, "
            "created_by, created_at, expires_at, last_used_at, revoked_at",
            (
                principal.org_id,
                body.name,
                prefix,
                token_digest(key),
                principal.actor,
                expires_at,
                [str(scope) for scope in body.scopes],
            ),
        )
        assert row is not None
        await audit.append_by(
            tx,
            principal,
            action="api_key.create",
            target=f"api_key:{row['id']}",
            detail={
                "name": body.name,
                "prefix": prefix,
                "scopes": [str(scope) for scope in body.scopes],
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return json_response(ApiKeyCreatedOut.model_validate({**row, "key": key}), status=201)


async def revoke_api_key(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    key_id = uuid_param(request, "key_id", "API key")
    async with request.app[keys.DB].transaction() as tx:
        target = await tx.one(
            "SELECT scopes FROM api_keys WHERE id = %s AND org_id = %s FOR UPDATE",
            (key_id, principal.org_id),
        )
        if target is None:
            raise NotFound("no such API key", code="api_key_not_found")
        if not {Scope(scope) for scope in target["scopes"]} <= principal.scopes:
            raise Forbidden(
                "this key cannot revoke a key holding scopes it does not hold",
                code="scope_exceeds_own",
            )
        row = await tx.one(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
            "WHERE id = %s RETURNING prefix",
            (key_id,),
        )
        assert row is not None
        await audit.append_by(
            tx,
            principal,
            action="api_key.revoke",
            target=f"api_key:{key_id}",
            detail={"prefix": row["prefix"]},
        )
    return web.Response(status=204)


ROUTES = [
    Route(
        "GET",
        "/api/v1/api-keys",
        list_api_keys,
        "List the org's API keys (never the secrets)",
        Auth.TENANT,
        "api-keys",
        {200: ApiKeyList},
        scope=Scope.KEYS,
    ),
    Route(
        "POST",
        "/api/v1/api-keys",
        create_api_key,
        "Create an API key; the secret is in this response only",
        Auth.TENANT,
        "api-keys",
        {201: ApiKeyCreatedOut},
        scope=Scope.KEYS,
        body=ApiKeyIn,
    ),
    Route(
        "DELETE",
        "/api/v1/api-keys/{key_id}",
        revoke_api_key,
        "Revoke an API key",
        Auth.TENANT,
        "api-keys",
        {204: None},
        scope=Scope.KEYS,
    ),
]
