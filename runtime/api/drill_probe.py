"""The recovery drill's and the upgrade gate's smoke checks, run inside an api container.

The drill's scratch stack publishes no port, so the checks run where its services are
reachable: `docker compose exec -T api python -c <this file's source>`, parameters as one JSON
object on stdin (never in the process list), results as one JSON object on stdout. The checks use
only the standard library and aiohttp, the hash mode the image's own `runtime.api.security`:
the file's text is what runs, against the image's code.

Modes:
- `{"mode": "hash", "password": …}` → `{"hash": …}`: the image's own password hash, so the
  drill can give one restored user a known password in the scratch database only.
- `{"mode": "check", "email", "password", "agent_id", "agent_name", "public_id", "origin",
  "call": bool}` → `{"checks": [{"name", "ok", "detail", "seconds"}]}`: readiness always;
  the login without an email, the agent read without an agent id, the call without `call`
  are left out (the drill reports them as skipped, saying why).
- `{"mode": "enroll", "org_name", "email", "password", "agent_name", "origin"}` →
  `{"agent_id", "public_id"}`: a tenant signed up through the API with one agent that allows
  `origin`; the upgrade gate's own probe tenant on a live stack, so its checks log in, read an
  agent and call without touching a customer's data.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

API = "http://api:3000"
GATEWAY = "http://gateway:4001"
STEP_SECONDS = 60.0


async def _ready(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/readyz") as response:
        if response.status != 200:
            raise RuntimeError(f"GET {base}/readyz answered {response.status}")
    return f"{base}/readyz 200"


async def _json(response: aiohttp.ClientResponse, expected: int, what: str) -> dict[str, Any]:
    body: dict[str, Any] = await response.json(content_type=None)
    if response.status != expected:
        code = (body.get("error") or {}).get("code") if isinstance(body, dict) else None
        raise RuntimeError(f"{what} answered {response.status} ({code})")
    return body


class _Session:
    """The tenant session of the probed user, once logged in."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}


async def _login(http: aiohttp.ClientSession, params: dict[str, Any], session: _Session) -> str:
    async with http.post(
        f"{API}/api/v1/auth/login",
        json={"email": params["email"], "password": params["password"]},
    ) as response:
        body = await _json(response, 200, "POST /api/v1/auth/login")
    session.headers = {"Authorization": f"Bearer {body['access_token']}"}
    async with http.get(f"{API}/api/v1/me", headers=session.headers) as response:
        me = await _json(response, 200, "GET /api/v1/me")
    if json.dumps(me).lower().count(str(params["email"]).lower()) == 0:
        raise RuntimeError("GET /api/v1/me does not name the user who logged in")
    return "logged in; /api/v1/me answers with a token from the stack's key ring"


async def _agent(http: aiohttp.ClientSession, params: dict[str, Any], session: _Session) -> str:
    if not session.headers:
        raise RuntimeError("no session: the login failed")
    async with http.get(
        f"{API}/api/v1/agents/{params['agent_id']}", headers=session.headers
    ) as response:
        agent = await _json(response, 200, "GET /api/v1/agents/{id}")
    if agent.get("name") != params["agent_name"]:
        raise RuntimeError("the agent read through the API differs from its database row")
    return "an agent read through the tenant API matches its database row"


async def _call(http: aiohttp.ClientSession, params: dict[str, Any]) -> str:
    origin = str(params["origin"])
    async with http.post(
        f"{API}/api/v1/widget/agents/{params['public_id']}/sessions",
        data=b"",
        headers={"Origin": origin},
    ) as response:
        widget = await _json(response, 201, "POST /api/v1/widget/agents/{id}/sessions")
    async with http.ws_connect(
        f"{GATEWAY}/ws/call?token={widget['token']}", headers={"Origin": origin}
    ) as ws:
        seen: list[str] = []
        call_id = ""
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(message.data)
            seen.append(str(event.get("type")))
            if event.get("type") == "session.started":
                call_id = str(event.get("call_id"))
                await ws.send_str('{"type": "end"}')
            elif event.get("type") == "error":
                raise RuntimeError(f"the gateway sent error {event.get('code')}")
            elif event.get("type") == "session.ended":
                return f"call {call_id}: session.started (model connected), hung up, ended"
    raise RuntimeError(f"the call closed without session.ended (saw {seen})")


async def _enroll(params: dict[str, Any]) -> dict[str, str]:
    timeout = aiohttp.ClientTimeout(total=STEP_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.post(
            f"{API}/api/v1/auth/signup",
            json={k: params[k] for k in ("org_name", "email", "password")},
        ) as response:
            owner = await _json(response, 201, "POST /api/v1/auth/signup")
        async with http.post(
            f"{API}/api/v1/agents",
            json={
                "name": params["agent_name"],
                "instructions": "Answer the operator's health checks briefly.",
                "allowed_origins": [params["origin"]],
            },
            headers={"Authorization": f"Bearer {owner['access_token']}"},
        ) as response:
            agent = await _json(response, 201, "POST /api/v1/agents")
    return {"agent_id": str(agent["id"]), "public_id": str(agent["public_id"])}


async def _checks(params: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    session = _Session()
    timeout = aiohttp.ClientTimeout(total=STEP_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def run(name: str, step: Callable[[], Awaitable[str]]) -> None:
            started = time.monotonic()
            try:
                detail = await asyncio.wait_for(step(), STEP_SECONDS)
                ok = True
            # Every failure of a check is a result to report, whatever raised it.
            except Exception as exc:  # noqa: BLE001
                detail, ok = f"{type(exc).__name__}: {exc}", False
            seconds = round(time.monotonic() - started, 2)
            results.append({"name": name, "ok": ok, "detail": detail, "seconds": seconds})

        await run("api ready", lambda: _ready(http, API))
        await run("gateway ready", lambda: _ready(http, GATEWAY))
        if params.get("email"):
            await run("api login", lambda: _login(http, params, session))
        if params.get("agent_id"):
            await run("agent read", lambda: _agent(http, params, session))
        if params.get("call"):
            await run("call through the gateway", lambda: _call(http, params))
    return results


def main() -> None:
    params = json.loads(sys.stdin.read())
    if params["mode"] == "hash":
        # The API's own hashing, from the image: the scheme the restored API verifies.
        from runtime.api.security import hash_password_sync

        print(json.dumps({"hash": hash_password_sync(params["password"])}))
        return
    if params["mode"] == "enroll":
        print(json.dumps(asyncio.run(_enroll(params))))
        return
    print(json.dumps({"checks": asyncio.run(_checks(params))}))


if __name__ == "__main__":
    main()
