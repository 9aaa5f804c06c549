"""The internal API the gateway calls (service token): start a call by redeeming a widget
token, run a tool, append transcript segments (idempotent on (call_id, seq)), end a call;
plus the operators' audit chain (key rotations are recorded there)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from runtime.api import audit, keys
from runtime.api.errors import Forbidden, NotFound, Unauthorized
from runtime.api.models.audit_log import AuditVerifyOut
from runtime.api.models.internal import (
    AgentRuntime,
    AuditEventIn,
    CallEndIn,
    CallStartIn,
    CallStartOut,
    ToolError,
    ToolExecuteIn,
    ToolResultOut,
    TranscriptIn,
)
from runtime.api.origins import normalise_origin, origin_allowed
from runtime.api.routing import Auth, Route, json_response, read_body, uuid_param
from runtime.api.security import token_digest
from runtime.api.tools import call_webhook
from runtime.common.db import Queries


async def start_call(request: web.Request) -> web.Response:
    body = await read_body(request, CallStartIn)
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.DB].transaction() as tx:
        session = await tx.one(
            "SELECT w.id, w.agent_id, w.org_id, w.origin, w.end_user_id, w.expires_at, "
            "w.used_at, a.allowed_origins, a.deleted_at, o.max_concurrent_calls AS org_max "
            "FROM widget_sessions w JOIN agents a ON a.id = w.agent_id "
            "JOIN orgs o ON o.id = w.org_id WHERE w.token_hash = %s FOR UPDATE OF w",
            (token_digest(body.token),),
        )
        if (
            session is None
            or session["used_at"] is not None
            or session["expires_at"] <= datetime.now(UTC)
            or session["deleted_at"] is not None
        ):
            raise Unauthorized(
                "the widget session token is unknown, used or expired", code="token_invalid"
            )
        # The token is bound to the origin it was issued to, which must still be allowed.
        if normalise_origin(body.origin) != normalise_origin(session["origin"]) or not (
            origin_allowed(body.origin, session["allowed_origins"], settings.allowed_origins)
        ):
            raise Forbidden("this origin may not use this agent", code="origin_not_allowed")
        await tx.execute(
            "UPDATE widget_sessions SET used_at = now() WHERE id = %s", (session["id"],)
        )
        call = await tx.one(
            "INSERT INTO calls (org_id, agent_id, origin, end_user_id, instance_id) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (
                session["org_id"],
                session["agent_id"],
                session["origin"],
                session["end_user_id"],
                body.instance_id,
            ),
        )
        assert call is not None
        agent = await tx.one(
            "SELECT id, public_id, org_id, name, instructions, voice, language, model, greeting, "
            "max_session_seconds, tools, allowed_origins, max_concurrent_calls "
            "FROM agents WHERE id = %s",
            (session["agent_id"],),
        )
        assert agent is not None
    runtime = AgentRuntime.model_validate({**agent, "org_max_concurrent_calls": session["org_max"]})
    return json_response(
        CallStartOut(call_id=call["id"], org_id=session["org_id"], agent=runtime), status=201
    )


async def _call_exists(tx: Queries, call_id: UUID) -> None:
    if await tx.one("SELECT 1 AS found FROM calls WHERE id = %s", (call_id,)) is None:
        raise NotFound("no such call", code="call_not_found")


async def execute_tool(request: web.Request) -> web.Response:
    body = await read_body(request, ToolExecuteIn)
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.DB].transaction() as tx:
        call = await tx.one(
            "SELECT c.agent_id, a.tools, a.webhook_secret FROM calls c "
            "JOIN agents a ON a.id = c.agent_id "
            "WHERE c.id = %s",
            (body.call_id,),
        )
    if call is None:
        raise NotFound("no such call", code="call_not_found")
    tool = next((t for t in call["tools"] if t["name"] == body.name), None)
    metrics = request.app[keys.METRICS]
    if tool is None:
        metrics.tool_calls.labels("unknown_tool").inc()
        return json_response(
            ToolResultOut(
                ok=False,
                error=ToolError(
                    code="unknown_tool", message=f"this agent has no tool {body.name!r}"
                ),
            )
        )
    result = await call_webhook(
        request.app[keys.HTTP_CLIENT],
        tool,
        call_id=str(body.call_id),
        agent_id=str(call["agent_id"]),
        webhook_secret=str(call["webhook_secret"]),
        arguments=body.arguments,
        max_response_bytes=settings.tool_max_response_bytes,
        allow_private_networks=settings.tool_allow_private_networks,
    )
    metrics.tool_calls.labels(
        "ok" if result.ok else result.error.code if result.error else "error"
    ).inc()
    return json_response(result)


async def append_transcript(request: web.Request) -> web.Response:
    call_id = uuid_param(request, "call_id", "call")
    body = await read_body(request, TranscriptIn)
    segments = body.segments
    async with request.app[keys.DB].transaction() as tx:
        await _call_exists(tx, call_id)
        # One statement for the whole batch; a segment already stored (a retried batch)
        # is kept as first written.
        await tx.execute(
            "INSERT INTO transcript_segments (call_id, seq, org_id, role, text, at) "
            "SELECT %s, s.seq, c.org_id, s.role, s.text, s.at FROM calls c, "
            "unnest(%s::int[], %s::text[], %s::text[], %s::timestamptz[]) AS s(seq, role, text, at) "
            "WHERE c.id = %s ON CONFLICT (call_id, seq) DO NOTHING",
            (
                call_id,
                [s.seq for s in segments],
                [s.role for s in segments],
                [s.text for s in segments],
                [s.at for s in segments],
                call_id,
            ),
        )
    return web.Response(status=204)


async def end_call(request: web.Request) -> web.Response:
    call_id = uuid_param(request, "call_id", "call")
    body = await read_body(request, CallEndIn)
    async with request.app[keys.DB].transaction() as tx:
        await _call_exists(tx, call_id)
        # Ending twice keeps the first ending (a gateway retry must not overwrite it).
        await tx.execute(
            "UPDATE calls SET ended_at = now(), duration_ms = %s, end_reason = %s, "
            "prompt_tokens = %s, response_tokens = %s, total_tokens = %s "
            "WHERE id = %s AND ended_at IS NULL",
            (
                body.duration_ms,
                body.end_reason,
                body.usage.prompt_tokens,
                body.usage.response_tokens,
                body.usage.total_tokens,
                call_id,
            ),
        )
    return web.Response(status=204)


async def record_audit_event(request: web.Request) -> web.Response:
    body = await read_body(request, AuditEventIn)
    async with request.app[keys.DB].transaction() as tx:
        await audit.append(
            tx,
            chain=audit.SYSTEM_CHAIN,
            org_id=None,
            actor=body.actor,
            action=body.action,
            detail=json.loads(json.dumps(body.detail)),
        )
    return web.Response(status=204)


async def verify_system_audit(request: web.Request) -> web.Response:
    async with request.app[keys.DB].transaction() as tx:
        result = await audit.verify_chain(tx, audit.SYSTEM_CHAIN)
    return json_response(AuditVerifyOut.model_validate(result, from_attributes=True))


_CALL = "/internal/calls/{call_id}"
ROUTES = [
    Route(
        "POST",
        "/internal/calls",
        start_call,
        "Redeem a widget session token: start a call, get the agent's runtime config",
        Auth.INTERNAL,
        "internal",
        {201: CallStartOut},
        body=CallStartIn,
    ),
    Route(
        "POST",
        "/internal/tools/execute",
        execute_tool,
        "Run a tool through its webhook",
        Auth.INTERNAL,
        "internal",
        {200: ToolResultOut},
        body=ToolExecuteIn,
    ),
    Route(
        "POST",
        _CALL + "/transcript",
        append_transcript,
        "Append transcript segments (idempotent on call and seq)",
        Auth.INTERNAL,
        "internal",
        {204: None},
        body=TranscriptIn,
    ),
    Route(
        "POST",
        _CALL + "/end",
        end_call,
        "End a call with its duration and token usage",
        Auth.INTERNAL,
        "internal",
        {204: None},
        body=CallEndIn,
    ),
    Route(
        "POST",
        "/internal/audit",
        record_audit_event,
        "Record an operator event (e.g. a key rotation) in the system audit chain",
        Auth.INTERNAL,
        "internal",
        {204: None},
        body=AuditEventIn,
    ),
    Route(
        "GET",
        "/internal/audit/verify",
        verify_system_audit,
        "Verify the system audit chain",
        Auth.INTERNAL,
        "internal",
        {200: AuditVerifyOut},
    ),
]
