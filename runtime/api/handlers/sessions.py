"""Sessions (calls) and their transcripts: list with filters, read; GDPR export and erasure
of everything held about one end-user id (both audit-logged, by a hash of the id so the
audit log does not keep the erased person's identifier)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString
from uuid import UUID

from aiohttp import web

from runtime.api import audit, keys
from runtime.api.errors import NotFound
from runtime.api.models.sessions import (
    EndUserErased,
    EndUserExport,
    SegmentOut,
    SessionDetail,
    SessionList,
    SessionListItem,
    SessionQuery,
)
from runtime.api.principal import Principal
from runtime.api.routing import (
    Auth,
    Route,
    json_response,
    read_query,
    text_param,
    uuid_param,
)
from runtime.common.db import Queries, Row

_COLUMNS: LiteralString = (
    "id, agent_id, origin, end_user_id, instance_id, started_at, ended_at, duration_ms, "
    "end_reason, prompt_tokens, response_tokens, total_tokens"
)


def _session(row: Row) -> dict[str, Any]:
    usage = {name: row[name] for name in ("prompt_tokens", "response_tokens", "total_tokens")}
    return {**row, "usage": usage}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _encode_cursor(row: Row) -> str:
    """`<start, microseconds since the epoch>-<call id>` (models.sessions.CURSOR_PATTERN): exact, as
    PostgreSQL keeps microseconds, and every string of that form decodes to a position."""
    micros = (row["started_at"] - _EPOCH) // _MICROSECOND
    return f"{micros}-{row['id'].hex}"


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    # SessionQuery checked the form, so this cannot fail.
    micros, call_id = cursor.split("-")
    return _EPOCH + int(micros) * _MICROSECOND, UUID(hex=call_id)


def _contains_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_sessions(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    query = read_query(request, SessionQuery)
    after_started, after_id = _decode_cursor(query.cursor) if query.cursor else (None, None)
    async with request.app[keys.DB].transaction() as tx:
        rows = await tx.all(
            f"SELECT {_COLUMNS}, "  # noqa: S608 - constant columns
            # The first matching line (none without q: ILIKE NULL is folded to no rows).
            "(SELECT text FROM transcript_segments s WHERE s.call_id = calls.id "
            "AND s.org_id = %(org)s AND s.text ILIKE %(pattern)s ORDER BY s.seq LIMIT 1) AS match "
            "FROM calls WHERE org_id = %(org)s "
            # Searched through the trigram index (migration 0003), within the tenant's rows.
            "AND (%(pattern)s::text IS NULL OR id IN (SELECT call_id FROM transcript_segments "
            "WHERE org_id = %(org)s AND text ILIKE %(pattern)s)) "
            "AND (%(agent)s::uuid IS NULL OR agent_id = %(agent)s) "
            "AND (%(user)s::text IS NULL OR end_user_id = %(user)s) "
            "AND (%(status)s::text IS NULL OR (%(status)s = 'active') = (ended_at IS NULL)) "
            "AND (%(after)s::timestamptz IS NULL OR started_at >= %(after)s) "
            "AND (%(before)s::timestamptz IS NULL OR started_at < %(before)s) "
            "AND (%(c_at)s::timestamptz IS NULL OR (started_at, id) < (%(c_at)s, %(c_id)s::uuid)) "
            "ORDER BY started_at DESC, id DESC LIMIT %(limit)s",
            {
                "org": principal.org_id,
                "agent": query.agent_id,
                "user": query.end_user_id,
                "status": query.status,
                "after": query.started_after,
                "before": query.started_before,
                "c_at": after_started,
                "c_id": after_id,
                "pattern": _contains_pattern(query.q) if query.q else None,
                "limit": query.limit + 1,
            },
        )
    page = rows[: query.limit]
    next_cursor = _encode_cursor(page[-1]) if len(rows) > query.limit else None
    return json_response(
        SessionList(
            items=[SessionListItem.model_validate(_session(r)) for r in page],
            next_cursor=next_cursor,
        )
    )


async def _details(tx: Queries, principal: Principal, calls: list[Row]) -> list[SessionDetail]:
    ids = [row["id"] for row in calls]
    segments = await tx.all(
        "SELECT call_id, seq, role, text, at FROM transcript_segments "
        "WHERE org_id = %s AND call_id = ANY(%s) ORDER BY call_id, seq",
        (principal.org_id, ids),
    )
    by_call: dict[UUID, list[SegmentOut]] = {}
    for segment in segments:
        by_call.setdefault(segment["call_id"], []).append(SegmentOut.model_validate(segment))
    return [
        SessionDetail.model_validate({**_session(row), "transcript": by_call.get(row["id"], [])})
        for row in calls
    ]


async def get_session(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    call_id = uuid_param(request, "call_id", "session")
    async with request.app[keys.DB].transaction() as tx:
        row = await tx.one(
            f"SELECT {_COLUMNS} FROM calls WHERE id = %s AND org_id = %s",  # noqa: S608
            (call_id, principal.org_id),
        )
        if row is None:
            raise NotFound("no such session", code="session_not_found")
        (detail,) = await _details(tx, principal, [row])
    return json_response(detail)


def _subject_digest(end_user_id: str) -> str:
    return hashlib.sha256(end_user_id.encode()).hexdigest()


async def export_end_user(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    end_user_id = text_param(request, "end_user_id")
    async with request.app[keys.DB].transaction() as tx:
        calls = await tx.all(
            f"SELECT {_COLUMNS} FROM calls WHERE org_id = %s AND end_user_id = %s "  # noqa: S608
            "ORDER BY started_at, id",
            (principal.org_id, end_user_id),
        )
        details = await _details(tx, principal, calls)
        await audit.append_by(
            tx,
            principal,
            action="gdpr.export",
            target=f"end_user_sha256:{_subject_digest(end_user_id)}",
            detail={"sessions": len(details)},
        )
    return json_response(
        EndUserExport(end_user_id=end_user_id, exported_at=datetime.now(UTC), sessions=details)
    )


async def erase_end_user(request: web.Request) -> web.Response:
    """Delete the person's words and unlink their id from every session and pending token;
    the sessions' anonymous usage figures stay for billing."""
    principal = request[keys.PRINCIPAL]
    end_user_id = text_param(request, "end_user_id")
    async with request.app[keys.DB].transaction() as tx:
        segments = await tx.execute(
            "DELETE FROM transcript_segments WHERE org_id = %s AND call_id IN "
            "(SELECT id FROM calls WHERE org_id = %s AND end_user_id = %s)",
            (principal.org_id, principal.org_id, end_user_id),
        )
        sessions = await tx.execute(
            "UPDATE calls SET end_user_id = NULL WHERE org_id = %s AND end_user_id = %s",
            (principal.org_id, end_user_id),
        )
        await tx.execute(
            "UPDATE widget_sessions SET end_user_id = NULL WHERE org_id = %s AND end_user_id = %s",
            (principal.org_id, end_user_id),
        )
        await audit.append_by(
            tx,
            principal,
            action="gdpr.erase",
            target=f"end_user_sha256:{_subject_digest(end_user_id)}",
            detail={"sessions": sessions, "segments": segments},
        )
    return json_response(
        EndUserErased(end_user_id=end_user_id, sessions_erased=sessions, segments_erased=segments)
    )


_END_USER = "/api/v1/end-users/{end_user_id}"
ROUTES = [
    Route(
        "GET",
        "/api/v1/sessions",
        list_sessions,
        "List sessions, newest first (filters; cursor pagination)",
        Auth.TENANT,
        "sessions",
        {200: SessionList},
        query=SessionQuery,
    ),
    Route(
        "GET",
        "/api/v1/sessions/{call_id}",
        get_session,
        "A session with its transcript",
        Auth.TENANT,
        "sessions",
        {200: SessionDetail},
    ),
    Route(
        "GET",
        _END_USER + "/export",
        export_end_user,
        "GDPR: everything held about an end-user id",
        Auth.TENANT,
        "gdpr",
        {200: EndUserExport},
    ),
    Route(
        "DELETE",
        _END_USER,
        erase_end_user,
        "GDPR: erase an end-user's data",
        Auth.TENANT,
        "gdpr",
        {200: EndUserErased},
    ),
]
