# ruff: noqa: S608 - queries splice only the constant AGENT_COLUMNS; values are parameters
"""Agents: create, list, read, update, delete (soft), always within the caller's org."""

from __future__ import annotations

import html
import json
import secrets
from typing import Any, LiteralString
from uuid import UUID

from aiohttp import web

from runtime.api import audit, keys
from runtime.api.errors import NotFound
from runtime.api.models.agents import AgentIn, AgentList, AgentOut, AgentPatch
from runtime.api.principal import Principal
from runtime.api.routing import Auth, Route, json_response, read_body, uuid_param
from runtime.common.db import Queries, Row

AGENT_COLUMNS: LiteralString = (
    "id, org_id, public_id, name, instructions, voice, language, model, greeting, "
    "max_session_seconds, max_concurrent_calls, tools, allowed_origins, webhook_secret, "
    "created_at, updated_at"
)
_EDITABLE = (
    "name",
    "instructions",
    "voice",
    "language",
    "model",
    "greeting",
    "max_session_seconds",
    "max_concurrent_calls",
    "tools",
    "allowed_origins",
)


def embed_snippet(public_url: str, public_id: str) -> str:
    """The tag a tenant pastes into a page (docs/web.md#embedding)."""
    src = html.escape(f"{public_url.rstrip('/')}/widget.js", quote=True)
    agent = html.escape(public_id, quote=True)
    return f'<script src="{src}" data-agent="{agent}" async></script>'


def _out(request: web.Request, row: Row) -> AgentOut:
    snippet = embed_snippet(request.app[keys.SETTINGS].public_url, row["public_id"])
    return AgentOut.model_validate({**row, "embed_snippet": snippet})


def _public_id() -> str:
    return "agt_" + secrets.token_urlsafe(12)


async def _load(tx: Queries, principal: Principal, agent_id: UUID, *, lock: bool) -> Row:
    sql: LiteralString = (
        f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = %s AND org_id = %s AND deleted_at IS NULL"
    )
    row = await tx.one(sql + (" FOR UPDATE" if lock else ""), (agent_id, principal.org_id))
    if row is None:
        raise NotFound("no such agent", code="agent_not_found")
    return row


def _values(fields: dict[str, Any]) -> tuple[Any, ...]:
    return (
        fields["name"],
        fields["instructions"],
        fields["voice"],
        fields["language"],
        fields["model"],
        fields["greeting"],
        fields["max_session_seconds"],
        fields["max_concurrent_calls"],
        json.dumps(fields["tools"]),
        list(fields["allowed_origins"]),
    )


async def list_agents(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    async with request.app[keys.DB].transaction() as tx:
        rows = await tx.all(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE org_id = %s AND deleted_at IS NULL "
            "ORDER BY created_at, id",
            (principal.org_id,),
        )
    return json_response(AgentList(items=[_out(request, row) for row in rows]))


async def create_agent(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    body = await read_body(request, AgentIn)
    async with request.app[keys.DB].transaction() as tx:
        row = await tx.one(
            "INSERT INTO agents (org_id, public_id, name, instructions, voice, language, model, "
            "greeting, max_session_seconds, max_concurrent_calls, tools, allowed_origins) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"RETURNING {AGENT_COLUMNS}",
            (principal.org_id, _public_id(), *_values(body.model_dump())),
        )
        assert row is not None
        await audit.append_by(
            tx,
            principal,
            action="agent.create",
            target=f"agent:{row['id']}",
            detail={"name": body.name},
        )
    return json_response(_out(request, row), status=201)


async def get_agent(request: web.Request) -> web.Response:
    agent_id = uuid_param(request, "agent_id", "agent")
    async with request.app[keys.DB].transaction() as tx:
        row = await _load(tx, request[keys.PRINCIPAL], agent_id, lock=False)
    return json_response(_out(request, row))


async def update_agent(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    agent_id = uuid_param(request, "agent_id", "agent")
    patch = await read_body(request, AgentPatch)
    changes = patch.changes()
    async with request.app[keys.DB].transaction() as tx:
        current = await _load(tx, principal, agent_id, lock=True)
        merged = {name: current[name] for name in _EDITABLE} | changes
        row = await tx.one(
            "UPDATE agents SET name = %s, instructions = %s, voice = %s, language = %s, "
            "model = %s, greeting = %s, max_session_seconds = %s, max_concurrent_calls = %s, "
            "tools = %s, allowed_origins = %s, updated_at = now() "
            f"WHERE id = %s AND org_id = %s RETURNING {AGENT_COLUMNS}",
            (*_values(merged), agent_id, principal.org_id),
        )
        assert row is not None
        await audit.append_by(
            tx,
            principal,
            action="agent.update",
            target=f"agent:{agent_id}",
            detail={"fields": sorted(changes)},
        )
    return json_response(_out(request, row))


async def delete_agent(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    agent_id = uuid_param(request, "agent_id", "agent")
    async with request.app[keys.DB].transaction() as tx:
        await _load(tx, principal, agent_id, lock=True)
        await tx.execute(
            "UPDATE agents SET deleted_at = now() WHERE id = %s AND org_id = %s",
            (agent_id, principal.org_id),
        )
        await audit.append_by(
            tx,
            principal,
            action="agent.delete",
            target=f"agent:{agent_id}",
        )
    return web.Response(status=204)


async def rotate_webhook_secret(request: web.Request) -> web.Response:
    """A new webhook signing secret; calls are signed with it from now on."""
    principal = request[keys.PRINCIPAL]
    agent_id = uuid_param(request, "agent_id", "agent")
    async with request.app[keys.DB].transaction() as tx:
        await _load(tx, principal, agent_id, lock=True)
        row = await tx.one(
            "UPDATE agents SET webhook_secret = %s, updated_at = now() "
            f"WHERE id = %s AND org_id = %s RETURNING {AGENT_COLUMNS}",
            (secrets.token_hex(32), agent_id, principal.org_id),
        )
        assert row is not None
        await audit.append_by(
            tx,
            principal,
            action="agent.webhook_secret.rotate",
            target=f"agent:{agent_id}",
        )
    return json_response(_out(request, row))


_ONE = "/api/v1/agents/{agent_id}"
ROUTES = [
    Route(
        "GET",
        "/api/v1/agents",
        list_agents,
        "List the org's agents",
        Auth.TENANT,
        "agents",
        {200: AgentList},
    ),
    Route(
        "POST",
        "/api/v1/agents",
        create_agent,
        "Create an agent",
        Auth.TENANT,
        "agents",
        {201: AgentOut},
        body=AgentIn,
    ),
    Route("GET", _ONE, get_agent, "Read an agent", Auth.TENANT, "agents", {200: AgentOut}),
    Route(
        "PATCH",
        _ONE,
        update_agent,
        "Change some of an agent's fields",
        Auth.TENANT,
        "agents",
        {200: AgentOut},
        body=AgentPatch,
    ),
    Route(
        "DELETE",
        _ONE,
        delete_agent,
        "Delete an agent (its past sessions stay)",
        Auth.TENANT,
        "agents",
        {204: None},
    ),
    Route(
        "POST",
        _ONE + "/webhook-secret",
        rotate_webhook_secret,
        "Replace the agent's webhook signing secret",
        Auth.TENANT,
        "agents",
        {200: AgentOut},
    ),
]
