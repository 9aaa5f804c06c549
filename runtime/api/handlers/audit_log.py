"""The tenant's audit log: read it, and verify its hash chain."""

from __future__ import annotations

from aiohttp import web

from runtime.api import audit, keys
from runtime.api.models.audit_log import AuditEntryOut, AuditList, AuditQuery, AuditVerifyOut
from runtime.api.routing import Auth, Route, json_response, read_query


async def list_audit(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    query = read_query(request, AuditQuery)
    async with request.app[keys.DB].transaction() as tx:
        rows = await tx.all(
            "SELECT seq, actor, action, target, detail, created_at, prev_hash, hash "
            "FROM audit_log WHERE chain = %s AND (%s::bigint IS NULL OR seq < %s) "
            "ORDER BY seq DESC LIMIT %s",
            (audit.org_chain(principal.org_id), query.before_seq, query.before_seq, query.limit),
        )
    return json_response(AuditList(items=[AuditEntryOut.model_validate(r) for r in rows]))


async def verify_audit(request: web.Request) -> web.Response:
    principal = request[keys.PRINCIPAL]
    async with request.app[keys.DB].transaction() as tx:
        result = await audit.verify_chain(tx, audit.org_chain(principal.org_id))
    return json_response(AuditVerifyOut.model_validate(result, from_attributes=True))


ROUTES = [
    Route(
        "GET",
        "/api/v1/audit",
        list_audit,
        "The org's audit log, newest first",
        Auth.TENANT,
        "audit",
        {200: AuditList},
        query=AuditQuery,
    ),
    Route(
        "GET",
        "/api/v1/audit/verify",
        verify_audit,
        "Verify the org's audit hash chain",
        Auth.TENANT,
        "audit",
        {200: AuditVerifyOut},
    ),
]
