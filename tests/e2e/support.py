"""What the e2e test modules do through the stack's public API: sign up, make an agent, make a
widget call through nginx, and read the call's session back once the gateway has ended it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from typing import Any

import aiohttp

from tests.e2e.conftest import Stack
from tests.gateway.support import ORIGIN, WidgetCall, speech_then_silence

PASSWORD = "correct horse battery staple"


async def signup(http: aiohttp.ClientSession, stack: Stack, email: str) -> dict[str, str]:
    """A new tenant owner with PASSWORD; returns the Authorization header of its access token."""
    async with http.post(
        f"{stack.url}/api/v1/auth/signup",
        json={"org_name": "Shop", "email": email, "password": PASSWORD},
    ) as response:
        body = await response.json()
        assert response.status == 201, body
    return {"Authorization": f"Bearer {body['access_token']}"}


async def login_status(http: aiohttp.ClientSession, stack: Stack, email: str) -> int:
    """The HTTP status of a login with PASSWORD: 200 while the owner exists, 401 not."""
    async with http.post(
        f"{stack.url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    ) as response:
        return response.status


def psql(stack: Stack, sql: str) -> str:
    """One statement in the stack's `orbis` database as its owner; the rows as psql's -At."""
    result = subprocess.run(
        ["docker", "compose", "--project-name", stack.project, "exec", "-T", "postgres",
         "psql", "-U", "orbis", "-d", "orbis", "-At", "-c", sql],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def create_agent(http: aiohttp.ClientSession, stack: Stack, auth: dict[str, str]) -> str:
    async with http.post(
        f"{stack.url}/api/v1/agents",
        json={"name": "Front desk", "instructions": "Be helpful.", "allowed_origins": [ORIGIN]},
        headers=auth,
    ) as response:
        body = await response.json()
        assert response.status == 201, body
    return str(body["public_id"])


async def widget_session(http: aiohttp.ClientSession, stack: Stack, public_id: str) -> Any:
    """A widget session token for the agent, asked for from the allowed origin."""
    async with http.post(
        f"{stack.url}/api/v1/widget/agents/{public_id}/sessions",
        json={},
        headers={"Origin": ORIGIN},
    ) as response:
        session = await response.json()
        assert response.status == 201, session
    return session


async def connect_widget(
    http: aiohttp.ClientSession, url: str, *, within: float = 30.0
) -> aiohttp.ClientWebSocketResponse:
    """Connect as the widget does: a 503 (every gateway full, overloaded or draining; the
    token is not used) is tried again, for up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await http.ws_connect(url, headers={"Origin": ORIGIN})
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def widget_call(http: aiohttp.ClientSession, stack: Stack, public_id: str) -> str:
    """One widget call through nginx: session token, wss, speech, answer, hang-up."""
    session = await widget_session(http, stack, public_id)
    assert session["gateway_url"] == f"wss://localhost:{stack.https_port}/ws/call"
    async with await connect_widget(
        http, f"{session['gateway_url']}?token={session['token']}"
    ) as ws:
        call = WidgetCall(ws=ws)
        call.start()
        started = await call.wait_for("session.started", within=30)
        await call.send_frames(speech_then_silence())
        await call.wait_for("turn.complete", within=30)
        finals = [(e["role"], e["text"]) for e in call.of_type("transcript") if e["final"]]
        assert finals == [("user", "Hello there."), ("agent", "Hi! How can I help?")]
        assert len(call.audio) > 0
        await ws.send_str('{"type": "end"}')
        assert (await call.wait_for("session.ended", within=30))["reason"] == "hangup"
    return str(started["call_id"])


async def ended_session(
    http: aiohttp.ClientSession, stack: Stack, auth: dict[str, str], call_id: str
) -> dict[str, Any]:
    """The call's session once it has an end reason (read within 30 s)."""
    deadline = time.monotonic() + 30
    while True:  # the gateway posts the transcript and the call's end just after hang-up
        async with http.get(f"{stack.url}/api/v1/sessions/{call_id}", headers=auth) as response:
            body: dict[str, Any] = await response.json()
        if response.status == 200 and body["end_reason"] is not None:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.5)
