"""Tool webhooks (served by a real aiohttp server on loopback), transcripts, call end."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from aiohttp import web

from tests.api.fixtures import ApiHarness, start_api

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


@dataclass
class Webhook:
    url: str
    # (headers, raw body) of each call to /ok
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    """A tenant's webhook server: /ok answers; each other path misbehaves in one way."""
    hook = Webhook(url="")

    async def ok(request: web.Request) -> web.Response:
        raw = await request.read()
        hook.received.append((dict(request.headers), raw))
        payload = json.loads(raw)
        return web.json_response({"forecast": "sunny", "echo": payload["arguments"]})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)  # never answers within the tool's timeout
        return web.json_response({})

    async def error(request: web.Request) -> web.Response:
        return web.json_response({"detail": "boom"}, status=500)

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"blob": "x" * 200_000})

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/slow", slow)
    app.router.add_post("/error", error)
    app.router.add_post("/big", big)
    app.router.add_post("/not-json", not_json)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield hook
    finally:
        await runner.cleanup()


def _tool(name: str, url: str, timeout: float = 2.0) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"tool {name}",
        "url": url,
        "timeout_seconds": timeout,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }


async def _call_with_tools(
    api: ApiHarness, tools: list[dict[str, Any]]
) -> tuple[str, dict[str, Any]]:
    """Start a call on a new agent with these tools; returns (call id, agent)."""
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP], tools=tools)
    session = await api.widget_session(agent["public_id"], origin=SHOP)
    started = await api.start_call(session["token"], origin=SHOP)
    assert [t["name"] for t in started["agent"]["tools"]] == [t["name"] for t in tools]
    # Webhook URLs and the signing secret stay in the api.
    assert all("url" not in t for t in started["agent"]["tools"])
    assert "webhook_secret" not in started["agent"]
    return str(started["call_id"]), agent


async def _execute(api: ApiHarness, call_id: str, name: str) -> dict[str, Any]:
    _, body = await api.call(
        "POST",
        "/internal/tools/execute",
        json={"call_id": call_id, "name": name, "arguments": {"city": "Oslo"}},
        headers=api.internal_headers,
        expect=200,
    )
    assert isinstance(body, dict)
    return body


async def test_tool_webhook_outcomes(api: ApiHarness, webhook: Webhook) -> None:
    webhook_url = webhook.url
    call_id, agent = await _call_with_tools(
        api,
        [
            _tool("ok", webhook_url + "/ok"),
            _tool("slow", webhook_url + "/slow", timeout=0.3),
            _tool("error", webhook_url + "/error"),
            _tool("big", webhook_url + "/big"),
            _tool("not_json", webhook_url + "/not-json"),
            _tool("down", "http://127.0.0.1:9/nothing-listens"),
        ],
    )
    ok = await _execute(api, call_id, "ok")
    assert ok == {
        "ok": True,
        "result": {"forecast": "sunny", "echo": {"city": "Oslo"}},
        "error": None,
    }
    # The call is signed with the agent's webhook secret over "<timestamp>." + body.
    ((headers, raw),) = webhook.received
    signed = headers["X-Orbis-Timestamp"].encode() + b"." + raw
    signature = hmac.new(agent["webhook_secret"].encode(), signed, hashlib.sha256).hexdigest()
    assert headers["X-Orbis-Signature"] == f"sha256={signature}"
    assert abs(int(headers["X-Orbis-Timestamp"]) - time.time()) < 60
    assert json.loads(raw)["call_id"] == call_id
    expected = {
        "slow": "tool_timeout",
        "error": "tool_http_error",
        "big": "tool_response_too_large",
        "not_json": "tool_bad_response",
        "down": "tool_unreachable",
        "missing": "unknown_tool",
    }
    for name, code in expected.items():
        result = await _execute(api, call_id, name)
        assert result["ok"] is False
        assert result["error"]["code"] == code, (name, result)


async def test_unknown_call_is_404(api: ApiHarness) -> None:
    status, body = await api.call(
        "POST",
        "/internal/tools/execute",
        json={"call_id": "00000000-0000-0000-0000-000000000000", "name": "x"},
        headers=api.internal_headers,
    )
    assert (status, body["error"]["code"]) == (404, "call_not_found")


async def test_private_webhook_addresses_are_refused_by_default(
    api: ApiHarness, webhook: Webhook
) -> None:
    webhook_url = webhook.url
    port = webhook_url.rsplit(":", 1)[1]
    strict = api.settings.model_copy(update={"tool_allow_private_networks": False})
    async with start_api(strict) as strict_api:
        call_id, _ = await _call_with_tools(
            strict_api,
            [_tool("literal", webhook_url + "/ok"), _tool("named", f"http://localhost:{port}/ok")],
        )
        for name in ("literal", "named"):
            result = await _execute(strict_api, call_id, name)
            assert result["error"]["code"] == "tool_forbidden_address", result
    assert webhook.received == []


async def test_transcript_is_idempotent_and_call_end_recorded(api: ApiHarness) -> None:
    call_id, _ = await _call_with_tools(api, [])
    at = datetime.now(UTC).isoformat()
    batch = {
        "segments": [
            {"seq": 0, "role": "agent", "text": "Hello!", "at": at},
            {"seq": 1, "role": "user", "text": "Hi", "at": at},
        ]
    }
    path = f"/internal/calls/{call_id}/transcript"
    await api.call("POST", path, json=batch, headers=api.internal_headers, expect=204)
    # The gateway retries the batch, plus a new segment and a changed copy of seq 1.
    retry = {
        "segments": [
            *batch["segments"][:1],
            {"seq": 1, "role": "user", "text": "CHANGED", "at": at},
            {"seq": 2, "role": "agent", "text": "How can I help?", "at": at},
        ]
    }
    await api.call("POST", path, json=retry, headers=api.internal_headers, expect=204)
    end = {
        "duration_ms": 4200,
        "end_reason": "client_hangup",
        "usage": {"prompt_tokens": 10, "response_tokens": 20, "total_tokens": 30},
    }
    await api.call(
        "POST", f"/internal/calls/{call_id}/end", json=end, headers=api.internal_headers, expect=204
    )
    later = {**end, "duration_ms": 1}
    await api.call(
        "POST",
        f"/internal/calls/{call_id}/end",
        json=later,
        headers=api.internal_headers,
        expect=204,
    )
    async with await psycopg.AsyncConnection.connect(api.settings.database_conninfo) as conn:
        cursor = await conn.execute(
            "SELECT seq, text FROM transcript_segments WHERE call_id = %s ORDER BY seq", (call_id,)
        )
        assert await cursor.fetchall() == [(0, "Hello!"), (1, "Hi"), (2, "How can I help?")]
        cursor = await conn.execute(
            "SELECT duration_ms, end_reason, total_tokens FROM calls WHERE id = %s", (call_id,)
        )
        assert await cursor.fetchone() == (4200, "client_hangup", 30)
    status, body = await api.call(
        "POST",
        "/internal/calls/00000000-0000-0000-0000-000000000000/transcript",
        json=batch,
        headers=api.internal_headers,
    )
    assert (status, body["error"]["code"]) == (404, "call_not_found")
