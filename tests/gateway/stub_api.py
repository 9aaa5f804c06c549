"""TEMPORARY: the API's internal endpoints (docs/architecture.md) until the real API has them.

Replaced by tests.api.fixtures.api as soon as /internal/* land there.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

INTERNAL_TOKEN = "stub-internal-token"

ToolHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


async def _ok_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": {"tool": name, "arguments": arguments}}


@dataclass
class StubApi:
    url: str = ""
    tokens: dict[str, tuple[dict[str, Any], float]] = field(default_factory=dict)
    transcripts: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)
    tool_requests: list[dict[str, Any]] = field(default_factory=list)
    tool_handler: ToolHandler = _ok_tool
    delay: float = 0.0

    def agent(self, **fields: Any) -> dict[str, Any]:
        agent = {
            "id": str(uuid.uuid4()),
            "public_id": "ag_" + secrets.token_hex(4),
            "org_id": str(uuid.uuid4()),
            "name": "Front desk",
            "instructions": "Be helpful.",
            "voice": "Puck",
            "language": "en-US",
            "model": None,
            "greeting": None,
            "max_session_seconds": 600,
            "tools": [],
            "allowed_origins": ["https://shop.example"],
            "max_concurrent_calls": 10,
            "org_max_concurrent_calls": 20,
        }
        agent.update(fields)
        return agent

    def issue(self, agent: dict[str, Any], *, ttl: float = 120.0) -> str:
        token = secrets.token_urlsafe(16)
        self.tokens[token] = (agent, time.monotonic() + ttl)
        return token

    async def handle_calls(self, request: web.Request) -> web.Response:
        body = await request.json()
        entry = self.tokens.pop(body["token"], None)
        if entry is None or entry[1] < time.monotonic():
            return web.json_response({"error": {"code": "token_invalid"}}, status=401)
        agent = entry[0]
        if body["origin"] not in agent["allowed_origins"]:
            return web.json_response({"error": {"code": "origin_not_allowed"}}, status=403)
        call_id = str(uuid.uuid4())
        self.transcripts[call_id] = {}
        return web.json_response(
            {"call_id": call_id, "org_id": agent["org_id"], "agent": agent}, status=201
        )

    async def handle_tool(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.tool_requests.append(body)
        return web.json_response(await self.tool_handler(body["name"], body["arguments"]))

    async def handle_transcript(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        body = await request.json()
        stored = self.transcripts.setdefault(request.match_info["call_id"], {})
        for segment in body["segments"]:
            stored[segment["seq"]] = segment
        return web.Response(status=204)

    async def handle_end(self, request: web.Request) -> web.Response:
        self.ended[request.match_info["call_id"]] = await request.json()
        return web.Response(status=204)

    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {INTERNAL_TOKEN}":
            return web.json_response({"error": {"code": "unauthorized"}}, status=401)
        response: web.StreamResponse = await handler(request)
        return response


@asynccontextmanager
async def running_stub_api() -> AsyncIterator[StubApi]:
    stub = StubApi()
    app = web.Application(middlewares=[stub.auth])
    app.router.add_post("/internal/calls", stub.handle_calls)
    app.router.add_post("/internal/tools/execute", stub.handle_tool)
    app.router.add_post("/internal/calls/{call_id}/transcript", stub.handle_transcript)
    app.router.add_post("/internal/calls/{call_id}/end", stub.handle_end)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    stub.url = f"http://{host}:{port}"
    try:
        yield stub
    finally:
        await runner.cleanup()
