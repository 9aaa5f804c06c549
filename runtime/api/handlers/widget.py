"""The public widget API: agent config by public id, and single-use widget session tokens.

CORS headers are sent only to origins the agent (or the whole install) allows; a session
token is issued only to such an origin and is bound to it and to the agent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from runtime.api import keys
from runtime.api.errors import Forbidden, NotFound
from runtime.api.models.widget import WidgetConfigOut, WidgetSessionIn, WidgetSessionOut
from runtime.api.origins import cors_headers, origin_allowed
from runtime.api.routing import Auth, Route, json_response, read_body, text_param
from runtime.api.security import new_token, token_digest
from runtime.common.db import Row

WIDGET_TOKEN_PREFIX = "wst_"  # noqa: S105 - a prefix, not a secret
_CONFIG_METHODS = "GET, OPTIONS"
_SESSION_METHODS = "POST, OPTIONS"


async def _agent(request: web.Request) -> Row:
    async with request.app[keys.DB].autocommit() as tx:
        row = await tx.one(
            "SELECT id, org_id, public_id, name, greeting, voice, language, allowed_origins "
            "FROM agents WHERE public_id = %s AND deleted_at IS NULL",
            (text_param(request, "public_id", max_length=100),),
        )
    if row is None:
        raise NotFound("no such agent", code="agent_not_found")
    return row


def _allowed_origin(request: web.Request, agent: Row) -> str | None:
    origin = request.headers.get("Origin")
    settings = request.app[keys.SETTINGS]
    if origin and origin_allowed(origin, agent["allowed_origins"], settings.allowed_origins):
        return origin
    return None


async def widget_config(request: web.Request) -> web.Response:
    agent = await _agent(request)
    response = json_response(WidgetConfigOut.model_validate(agent))
    origin = _allowed_origin(request, agent)
    if origin is not None:
        response.headers.update(cors_headers(origin, methods=_CONFIG_METHODS))
    return response


async def _preflight(request: web.Request, methods: str) -> web.Response:
    agent = await _agent(request)
    origin = _allowed_origin(request, agent)
    if origin is None:
        raise Forbidden("this origin may not use this agent", code="origin_not_allowed")
    return web.Response(status=204, headers=cors_headers(origin, methods=methods))


async def widget_config_preflight(request: web.Request) -> web.Response:
    return await _preflight(request, _CONFIG_METHODS)


async def widget_session_preflight(request: web.Request) -> web.Response:
    return await _preflight(request, _SESSION_METHODS)


async def create_widget_session(request: web.Request) -> web.Response:
    agent = await _agent(request)
    origin = _allowed_origin(request, agent)
    if origin is None:
        raise Forbidden("this origin may not use this agent", code="origin_not_allowed")
    body = await read_body(request, WidgetSessionIn)
    settings = request.app[keys.SETTINGS]
    token = new_token(WIDGET_TOKEN_PREFIX)
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.widget_token_seconds)
    async with request.app[keys.DB].transaction() as tx:
        await tx.execute(
            "INSERT INTO widget_sessions (token_hash, org_id, agent_id, origin, end_user_id, "
            "expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                token_digest(token),
                agent["org_id"],
                agent["id"],
                origin,
                body.end_user_id,
                expires_at,
            ),
        )
    response = json_response(
        WidgetSessionOut(token=token, expires_at=expires_at, gateway_url=settings.gateway_url),
        status=201,
    )
    response.headers.update(cors_headers(origin, methods=_SESSION_METHODS))
    return response


_AGENT = "/api/v1/widget/agents/{public_id}"
ROUTES = [
    Route(
        "GET",
        _AGENT,
        widget_config,
        "An agent's public widget configuration",
        Auth.PUBLIC,
        "widget",
        {200: WidgetConfigOut},
    ),
    Route(
        "OPTIONS",
        _AGENT,
        widget_config_preflight,
        "CORS preflight for the widget config",
        Auth.PUBLIC,
        "widget",
        {204: None},
    ),
    Route(
        "POST",
        _AGENT + "/sessions",
        create_widget_session,
        "A single-use widget session token (2 minutes, bound to agent and origin); "
        "the JSON body may also come as text/plain (a CORS simple request)",
        Auth.PUBLIC,
        "widget",
        {201: WidgetSessionOut},
        body=WidgetSessionIn,
        cors_errors=True,
    ),
    Route(
        "OPTIONS",
        _AGENT + "/sessions",
        widget_session_preflight,
        "CORS preflight for widget sessions",
        Auth.PUBLIC,
        "widget",
        {204: None},
    ),
]
