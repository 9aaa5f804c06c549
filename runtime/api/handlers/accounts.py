"""Signup, login, token refresh (rotating, reuse-detecting), logout, and the caller's identity."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg.errors
from aiohttp import web

from runtime.api import audit, keys
from runtime.api.auth import bearer_token
from runtime.api.errors import Conflict, Invalid, Unauthorized
from runtime.api.models.accounts import (
    AuthOut,
    LoginIn,
    MeOut,
    OrgOut,
    RefreshIn,
    SignupIn,
    TokensOut,
    UserOut,
)
from runtime.api.routing import Auth, Route, json_response, read_body
from runtime.api.security import (
    DUMMY_PASSWORD_HASH,
    AccessClaims,
    hash_password,
    issue_access_token,
    new_token,
    token_digest,
    verify_access_token,
    verify_password,
)
from runtime.common.db import Queries, Row

REFRESH_PREFIX = "rt_"
# Unambiguous upper-case letters and digits for codes people type.
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _referral_code() -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(10))


async def _issue_tokens(
    request: web.Request,
    tx: Queries,
    *,
    user_id: str,
    org_id: str,
    family_id: str | None = None,
) -> TokensOut:
    settings = request.app[keys.SETTINGS]
    refresh = new_token(REFRESH_PREFIX)
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_seconds)
    family_id = family_id or str(uuid.uuid4())
    await tx.execute(
        "INSERT INTO refresh_tokens (family_id, user_id, org_id, token_hash, expires_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        (family_id, user_id, org_id, token_digest(refresh), expires_at),
    )
    access = issue_access_token(
        request.app[keys.KEYRING].current(),
        user_id=user_id,
        org_id=org_id,
        ttl_seconds=settings.access_token_seconds,
        family_id=family_id,
    )
    return TokensOut(
        access_token=access,
        expires_in=settings.access_token_seconds,
        refresh_token=refresh,
        refresh_expires_at=expires_at,
    )


def _auth_out(tokens: TokensOut, org: Row, user: Row) -> AuthOut:
    return AuthOut(
        **tokens.model_dump(), org=OrgOut.model_validate(org), user=UserOut.model_validate(user)
    )


async def signup(request: web.Request) -> web.Response:
    body = await read_body(request, SignupIn)
    settings = request.app[keys.SETTINGS]
    password_hash = await hash_password(body.password)
    try:
        async with request.app[keys.DB].transaction() as tx:
            referrer = None
            if body.referral_code and settings.referrals_enabled:
                referrer = await tx.one(
                    "SELECT id FROM orgs WHERE referral_code = %s", (body.referral_code.upper(),)
                )
                if referrer is None:
                    raise Invalid("referral_code: unknown referral code", field="referral_code")
            org = await tx.one(
                "INSERT INTO orgs (name, referral_code, referred_by) VALUES (%s, %s, %s) "
                "RETURNING id, name, referral_code, created_at",
                (body.org_name, _referral_code(), referrer["id"] if referrer else None),
            )
            assert org is not None
            user = await tx.one(
                "INSERT INTO users (org_id, email, password_hash) VALUES (%s, %s, %s) "
                "RETURNING id, email, role, created_at",
                (org["id"], body.email, password_hash),
            )
            assert user is not None
            org_id, user_id = str(org["id"]), str(user["id"])
            if referrer is not None:
                await tx.execute(
                    "INSERT INTO referral_rewards (org_id, referred_org_id, amount_cents) "
                    "VALUES (%s, %s, %s)",
                    (referrer["id"], org_id, settings.referral_reward_cents),
                )
                await audit.append(
                    tx,
                    chain=audit.org_chain(str(referrer["id"])),
                    org_id=str(referrer["id"]),
                    actor="system",
                    action="referral.reward",
                    target=f"org:{org_id}",
                    detail={"amount_cents": settings.referral_reward_cents},
                )
            await audit.append(
                tx,
                chain=audit.org_chain(org_id),
                org_id=org_id,
                actor=f"user:{user_id}",
                action="org.signup",
                target=f"org:{org_id}",
            )
            tokens = await _issue_tokens(request, tx, user_id=user_id, org_id=org_id)
    except psycopg.errors.UniqueViolation:
        raise Conflict(
            "an account with this email exists; log in instead",
            code="email_taken",
            field="email",
        ) from None
    return json_response(_auth_out(tokens, org, user), status=201)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, LoginIn)
    # Per account as well as per IP (the route's limit): guessing one account's password
    # from many addresses is limited too.
    await request.app[keys.LIMITER].check(
        "login-account", body.email, request.app[keys.SETTINGS].rate_limits.login_per_minute
    )
    async with request.app[keys.DB].transaction() as tx:
        user = await tx.one(
            "SELECT id, org_id, email, role, created_at, password_hash FROM users "
            "WHERE lower(email) = %s",
            (body.email,),
        )
    stored_hash = str(user["password_hash"]) if user else DUMMY_PASSWORD_HASH
    if not await verify_password(body.password, stored_hash) or user is None:
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    async with request.app[keys.DB].transaction() as tx:
        org = await tx.one(
            "SELECT id, name, referral_code, created_at FROM orgs WHERE id = %s", (user["org_id"],)
        )
        assert org is not None
        tokens = await _issue_tokens(
            request, tx, user_id=str(user["id"]), org_id=str(user["org_id"])
        )
    return json_response(_auth_out(tokens, org, user))


async def refresh(request: web.Request) -> web.Response:
    body = await read_body(request, RefreshIn)
    digest = token_digest(body.refresh_token)
    reused_family: str | None = None
    async with request.app[keys.DB].transaction() as tx:
        # Claim the token in one statement; a concurrent second use waits on the row lock,
        # then finds it used (and is treated as reuse below).
        claimed = await tx.one(
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = %s "
            "AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() "
            "RETURNING family_id, user_id, org_id",
            (digest,),
        )
        if claimed is not None:
            tokens = await _issue_tokens(
                request,
                tx,
                user_id=str(claimed["user_id"]),
                org_id=str(claimed["org_id"]),
                family_id=str(claimed["family_id"]),
            )
        else:
            row = await tx.one(
                "SELECT family_id, used_at, revoked_at FROM refresh_tokens WHERE token_hash = %s",
                (digest,),
            )
            if row is None:
                raise Unauthorized("unknown refresh token; log in again", code="token_invalid")
            if row["used_at"] is not None:
                # A used token presented again: someone holds a copy. Revoke the whole family
                # (the legitimate client logs in again); committed before answering.
                await tx.execute(
                    "UPDATE refresh_tokens SET revoked_at = now() "
                    "WHERE family_id = %s AND revoked_at IS NULL",
                    (row["family_id"],),
                )
                reused_family = str(row["family_id"])
            elif row["revoked_at"] is not None:
                raise Unauthorized(
                    "this refresh token was revoked; log in again", code="token_revoked"
                )
            else:
                raise Unauthorized(
                    "this refresh token has expired; log in again", code="token_expired"
                )
    if reused_family is not None:
        # The copy's holder may also hold access tokens of the family: they stop working too.
        await request.app[keys.REVOCATIONS].revoke_family_quietly(reused_family)
        raise Unauthorized(
            "this refresh token was already used; all sessions from it are revoked, log in again",
            code="token_reused",
        )
    return json_response(tokens)


async def logout(request: web.Request) -> web.Response:
    """Revoke the refresh token's family and, at once, the access tokens issued from it (and
    the access token sent as `Authorization: Bearer`, if any): deny-listed in Redis until
    they expire. Retrying is safe: a revoked family is found and revoked again."""
    body = await read_body(request, RefreshIn)
    access = _presented_access_token(request)
    async with request.app[keys.DB].transaction() as tx:
        row = await tx.one(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = %s",
            (token_digest(body.refresh_token),),
        )
    family_id = str(row["family_id"]) if row is not None else None
    if family_id is not None or access is not None:
        # First, so a 503 here leaves nothing half done that a retry could not finish.
        await request.app[keys.REVOCATIONS].revoke(
            jti=access.jti if access else None,
            expires_at=access.expires_at if access else None,
            family_id=family_id,
        )
    if family_id is not None:
        async with request.app[keys.DB].transaction() as tx:
            await tx.execute(
                "UPDATE refresh_tokens SET revoked_at = now() "
                "WHERE family_id = %s AND revoked_at IS NULL",
                (family_id,),
            )
    return web.Response(status=204)


def _presented_access_token(request: web.Request) -> AccessClaims | None:
    """The valid access token in the Authorization header, if one is there: logging out
    needs no access token, and an expired or foreign one has nothing left to revoke."""
    if not request.headers.get("Authorization"):
        return None
    try:
        token = bearer_token(request)
        return verify_access_token(request.app[keys.KEYRING].current(), token)
    except Unauthorized:
        return None


async def me(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    async with request.app[keys.DB].transaction() as tx:
        org = await tx.one(
            "SELECT id, name, referral_code, created_at FROM orgs WHERE id = %s",
            (principal.org_id,),
        )
        user: dict[str, Any] | None = None
        if principal.user_id is not None:
            user = await tx.one(
                "SELECT id, email, role, created_at FROM users WHERE id = %s AND org_id = %s",
                (principal.user_id, principal.org_id),
            )
    if org is None or (principal.user_id is not None and user is None):
        raise Unauthorized("this account no longer exists", code="token_invalid")
    return json_response(
        MeOut.model_validate(
            {
                "org": org,
                "user": user,
                "api_key_id": principal.api_key_id,
                "scopes": sorted(principal.scopes),
            }
        )
    )


ROUTES = [
    Route(
        "POST",
        "/api/v1/auth/signup",
        signup,
        "Create an organisation and its first user",
        Auth.CREDENTIALS,
        "auth",
        {201: AuthOut},
        body=SignupIn,
    ),
    Route(
        "POST",
        "/api/v1/auth/login",
        login,
        "Log in with email and password",
        Auth.CREDENTIALS,
        "auth",
        {200: AuthOut},
        body=LoginIn,
    ),
    Route(
        "POST",
        "/api/v1/auth/refresh",
        refresh,
        "Exchange a refresh token (single use) for new tokens",
        Auth.CREDENTIALS,
        "auth",
        {200: TokensOut},
        body=RefreshIn,
    ),
    Route(
        "POST",
        "/api/v1/auth/logout",
        logout,
        "Revoke a refresh token's family and the access tokens issued from it "
        "(and the access token in Authorization, if sent)",
        Auth.CREDENTIALS,
        "auth",
        {204: None},
        body=RefreshIn,
    ),
    Route(
        "GET",
        "/api/v1/me",
        me,
        "The calling user or API key and its organisation",
        Auth.TENANT,
        "auth",
        {200: MeOut},
    ),
]
