"""The emulator's aiohttp application: the Live WebSocket endpoint plus a small admin surface.

Routes:
  GET  .../GenerativeService.BidiGenerateContent   the Live session (any prefix, any version)
  GET  /healthz                                    liveness
  GET  /stats                                      counters as JSON (sessions, messages, faults)
  GET  /sessions                                   the most recent sessions and what they saw
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl

from aiohttp import web

from runtime.emulator.apikeys import ApiKeyFile
from runtime.emulator.context import EmulatorContext
from runtime.emulator.keys import CONTEXT, SETTINGS
from runtime.emulator.scenario import load_scenarios
from runtime.emulator.session import LiveSession
from runtime.emulator.settings import EmulatorSettings
from runtime.emulator.state import HandleStore, SessionLog, Stats

log = logging.getLogger(__name__)

# `/ws/google.ai.generativelanguage.v1.GenerativeService.BidiGenerateContent`, with any number
# of leading slashes (a base URL ending in "/" doubles them) and v1, v1beta or v1alpha.
LIVE_PATH = re.compile(
    r"^/*ws/google\.ai\.generativelanguage\.(?P<version>v1(?:alpha|beta)?)\.GenerativeService"
    r"\.BidiGenerateContent$"
)


async def live_endpoint(request: web.Request) -> web.StreamResponse:
    route = LIVE_PATH.match(request.path)
    if route is None:
        raise web.HTTPNotFound(text="not found\n")
    context = request.app[CONTEXT]
    ws = web.WebSocketResponse(
        max_msg_size=context.settings.max_message_bytes,
        timeout=5.0,  # how long a close waits for the client's close frame
    )
    await ws.prepare(request)
    session = LiveSession(ws, context, api_version=route.group("version"))
    context.sessions.add(session)
    try:
        await session.run(api_key=request.headers.get("x-goog-api-key"))
    finally:
        context.sessions.discard(session)
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    body = context.stats.as_json()
    body["resumption_handles"] = len(context.handles)
    return web.json_response(body)


async def sessions(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTEXT].session_log.as_json())


async def _close_sessions(app: web.Application) -> None:
    """On shutdown, end every live session with 1001 so clients learn at once (then reconnect)."""
    live = list(app[CONTEXT].sessions)
    if live:
        await asyncio.gather(*(session.shutdown() for session in live), return_exceptions=True)


def create_app(settings: EmulatorSettings) -> web.Application:
    """The emulator app; raises ScenarioError when the scenario file is unusable."""
    app = web.Application(client_max_size=settings.max_message_bytes)
    app[SETTINGS] = settings
    app[CONTEXT] = EmulatorContext(
        settings=settings,
        scenarios=load_scenarios(settings.scenario_file),
        api_keys=ApiKeyFile(settings.api_keys_file),
        handles=HandleStore(
            ttl_seconds=settings.resumption_handle_ttl_seconds,
            max_handles=settings.max_resumption_handles,
        ),
        stats=Stats(),
        session_log=SessionLog(settings.recent_sessions_kept),
    )
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/sessions", sessions)
    app.router.add_get("/{tail:.*}", live_endpoint)
    app.on_shutdown.append(_close_sessions)
    return app


def server_ssl_context(settings: EmulatorSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.cert_file, settings.key_file)
    return context
