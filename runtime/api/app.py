"""The API application factory: `create_app(settings)`; resources live in `cleanup_ctx`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

from aiohttp import hdrs, web

from runtime.api import keys
from runtime.api.errors import error_middleware
from runtime.api.handlers import (
    accounts,
    agents,
    api_keys,
    audit_log,
    internal,
    process,
    reference,
    referrals,
    sessions,
    widget,
)
from runtime.api.housekeeping import housekeeping_task
from runtime.api.openapi import build_document
from runtime.api.proxies import TrustedProxies
from runtime.api.ratelimit import RateLimiter
from runtime.api.revocation import Revocations
from runtime.api.routing import Route, register
from runtime.api.security import KeyRingSource
from runtime.api.settings import MIGRATIONS_DIR, ApiSettings
from runtime.api.telemetry import ApiMetrics
from runtime.api.tools import webhook_session
from runtime.common.db import Database, open_pool
from runtime.common.logs import request_id_middleware
from runtime.common.migrations import load_migrations
from runtime.common.redis_client import open_redis
from runtime.common.settings import reveal

ALL_ROUTES: list[Route] = [
    *process.ROUTES,
    *reference.ROUTES,
    *accounts.ROUTES,
    *agents.ROUTES,
    *widget.ROUTES,
    *api_keys.ROUTES,
    *sessions.ROUTES,
    *audit_log.ROUTES,
    *referrals.ROUTES,
    *internal.ROUTES,
]

# Bodies larger than this are refused with 413 before a handler reads them.
MAX_BODY_BYTES = 1024 * 1024


def _package_version() -> str:
    try:
        return version("orbisvoice")
    except PackageNotFoundError:
        return "0.0.0"


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with open_pool(
        settings.database_conninfo,
        max_size=settings.db_pool_max_size,
        wait_seconds=settings.db_pool_timeout_seconds,
    ) as pool:
        app[keys.DB] = Database(pool, app[keys.METRICS].db_query_seconds)
        yield


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with open_redis(settings.redis_url, reveal(settings.redis_password)) as client:
        app[keys.REDIS] = client
        app[keys.LIMITER] = RateLimiter(
            client,
            app[keys.METRICS].rate_limit_hits,
            window_seconds=settings.rate_limits.window_seconds,
        )
        app[keys.REVOCATIONS] = Revocations(
            client, access_token_seconds=settings.access_token_seconds
        )
        yield


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    allow_private = app[keys.SETTINGS].tool_allow_private_networks
    async with webhook_session(allow_private_networks=allow_private) as session:
        app[keys.HTTP_CLIENT] = session
        yield


async def _close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While draining, answer with `Connection: close`: a proxy then drops its keep-alive
    connection after the answer instead of sending the next request on a connection this
    process is about to close (nginx does not retry a POST that hit a closed connection)."""
    if request.app[keys.DRAINING].is_set():
        response.force_close()
        # The hook runs after aiohttp chose the Connection header from the keep-alive flag.
        response.headers[hdrs.CONNECTION] = "close"


def create_app(settings: ApiSettings) -> web.Application:
    metrics = ApiMetrics()
    app = web.Application(
        middlewares=[request_id_middleware, metrics.http.middleware(), error_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[keys.SETTINGS] = settings
    app[keys.METRICS] = metrics
    app[keys.MIGRATIONS] = tuple(load_migrations(MIGRATIONS_DIR))
    app[keys.KEYRING] = KeyRingSource(settings.jwt_keys_file)
    app[keys.PROXIES] = TrustedProxies(settings.trusted_proxies)
    app[keys.DRAINING] = asyncio.Event()
    app.on_response_prepare.append(_close_when_draining)
    app[keys.OPENAPI] = json.dumps(build_document(ALL_ROUTES, version=_package_version())).encode()
    app.cleanup_ctx.extend([_database, _redis, _http_client, housekeeping_task])
    register(app, ALL_ROUTES)
    return app
