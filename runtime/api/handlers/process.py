"""Process-level endpoints (not routed publicly by nginx): health, readiness, metrics, and
the OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from runtime.api import keys
from runtime.api.models.process import Health, Readiness
from runtime.api.routing import Auth, Route, json_response
from runtime.common.metrics import metrics_response
from runtime.common.migrations import pending_migrations

# Below the container health probe's 3 s (healthchecks/probes.py), so a dependency that hangs
# shows in the probe as "not ready: database unavailable" rather than as a probe timeout.
_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response(Health(status="ok"))


async def _database_check(request: web.Request) -> str:
    known = request.app[keys.MIGRATIONS]
    async with request.app[keys.DB].pool.connection(timeout=_CHECK_TIMEOUT) as conn:
        pending = await pending_migrations(conn, known)
    return f"migrations pending: {pending}" if pending else "ok"


async def _redis_check(request: web.Request) -> str:
    await request.app[keys.REDIS].ping()
    return "ok"


async def _bounded(check: Callable[[web.Request], Awaitable[str]], request: web.Request) -> str:
    try:
        return await asyncio.wait_for(check(request), _CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        return f"unavailable: {type(exc).__name__}"


async def readyz(request: web.Request) -> web.Response:
    """Ready when PostgreSQL answers with the schema this code needs and Redis answers."""
    checks_by_name = {"database": _database_check, "redis": _redis_check}
    results = await asyncio.gather(*(_bounded(c, request) for c in checks_by_name.values()))
    checks = dict(zip(checks_by_name, results, strict=True))
    ready = all(value == "ok" for value in checks.values())
    return json_response(
        Readiness(status="ready" if ready else "not_ready", checks=checks),
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[keys.METRICS].registry)


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[keys.OPENAPI], content_type="application/json")


ROUTES = [
    Route("GET", "/healthz", healthz, "The process is alive", Auth.NONE, "process", {200: Health}),
    Route(
        "GET",
        "/readyz",
        readyz,
        "PostgreSQL (with a current schema) and Redis answer",
        Auth.NONE,
        "process",
        {200: Readiness, 503: Readiness},
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        Auth.NONE,
        "process",
        {200: None},
        raw_content_type="text/plain",
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi,
        "This OpenAPI 3.1 document",
        Auth.NONE,
        "process",
        {200: None},
        raw_content_type="application/json",
    ),
]
