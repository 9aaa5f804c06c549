"""What the e2e suites that change a running stack (rotations, upgrades) share: the stack they
run `orbisctl` against as a process, and a load generator of API requests and live widget
calls through nginx that records every failure and dropped call."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp

from tests.e2e.logs import ServiceLogs
from tests.e2e.support import connect_widget
from tests.gateway.support import ORIGIN, WidgetCall, speech_then_silence

REQUEST_INTERVAL_SECONDS = 0.25
HELD_CALLS = 2
# How long a moved call may take to find a gateway that takes it (503 while none is ready).
RESUME_WINDOW_SECONDS = 60
LOAD_DEADLINE_SECONDS = 1500


ORBISCTL = [str(Path(sys.executable).parent / "orbisctl")]


def orbisctl(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    """This checkout's orbisctl as the operator runs it: a process of its own."""
    return subprocess.run(
        [*ORBISCTL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class ServedStack:
    """A stack under change, its services' logs followed."""

    root: Path
    https_port: int
    project: str
    logs: ServiceLogs

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root / "tls" / "ca.crt"))


@dataclass
class Traffic:
    """The load generator, on its own event loop in a thread: a GET and a POST loop against
    the API through nginx, and `calls` widget calls held open through nginx, the gateway and
    the emulator. A held call that gets `reconnect` moves (resume token), as the widget does.
    Any request not answered by the API, and any call that ends other than by hang-up, is
    recorded."""

    stack: ServedStack
    public_id: str
    calls: int = HELD_CALLS
    answered: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moves: int = 0
    hung_up: int = 0
    # When each failure and drop happened (epoch seconds), to place it in a step of the change.
    when: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _record(self, into: list[str], what: str) -> None:
        into.append(what)
        self.when.append((time.time(), what))

    async def _request(self, http: aiohttp.ClientSession, method: str) -> None:
        path = f"/api/v1/widget/agents/{self.public_id}"
        expected = 200
        if method == "POST":
            path, expected = path + "/sessions", 201
        try:
            async with http.request(
                method, self.stack.url + path, json={} if method == "POST" else None,
                headers={"Origin": ORIGIN}, timeout=aiohttp.ClientTimeout(total=15),
            ) as response:  # fmt: skip
                await response.read()
                if response.status == expected:
                    self.answered[method] += 1
                else:
                    self._record(self.failures, f"{method} HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(self.failures, f"{method} {type(exc).__name__}: {exc}")

    async def _requests(self, http: aiohttp.ClientSession, method: str) -> None:
        while not self._stop.is_set():
            await self._request(http, method)
            await asyncio.sleep(REQUEST_INTERVAL_SECONDS)

    async def _session_token(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.post(
            f"{self.stack.url}/api/v1/widget/agents/{self.public_id}/sessions",
            json={}, headers={"Origin": ORIGIN},
        ) as response:  # fmt: skip
            body: dict[str, Any] = await response.json()
            assert response.status == 201, body
        return body

    async def _held_call(self, http: aiohttp.ClientSession, number: int) -> None:
        session = await self._session_token(http)
        url = f"{session['gateway_url']}?token={session['token']}"
        ws = await connect_widget(http, url, within=RESUME_WINDOW_SECONDS)
        call = WidgetCall(ws=ws)
        call.start()
        call_id = (await call.wait_for("session.started", within=30))["call_id"]
        try:
            while not self._stop.is_set():
                hint = next(iter(call.of_type("reconnect")), None)
                ended = call.of_type("session.ended") + call.of_type("error")
                if ended:
                    self._record(self.dropped, f"call {number}: {ended[0]}")
                    return
                if hint is not None:
                    await ws.close()
                    url = f"{session['gateway_url']}?resume={hint['resume_token']}"
                    ws = await connect_widget(http, url, within=RESUME_WINDOW_SECONDS)
                    call = WidgetCall(ws=ws)
                    call.start()
                    resumed = await call.wait_for("session.started", within=30)
                    assert resumed["resumed"] is True and resumed["call_id"] == call_id, resumed
                    self.moves += 1
                    continue
                if ws.closed:
                    self._record(self.dropped, f"call {number}: closed {ws.close_code}")
                    return
                await ws.send_str('{"type": "ping"}')
                await asyncio.sleep(0.5)
            # Still a working call: one turn, then hang up.
            await call.send_frames(speech_then_silence())
            await call.wait_for("turn.complete", within=30)
            await ws.send_str('{"type": "end"}')
            ended_event = await call.wait_for("session.ended", within=30)
            assert ended_event["reason"] == "hangup", ended_event
            self.hung_up += 1
        except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
            self._record(self.dropped, f"call {number}: {type(exc).__name__}: {exc}")
        finally:
            await ws.close()

    async def _run(self) -> None:
        context = self.stack.ssl_context()
        # A new connection per request, as the requests are counted: a request written on a
        # kept-alive client connection just as an old nginx worker closes it (nginx reloads
        # during a roll) gets no answer; browsers retry such a request, aiohttp does not.
        per_request = aiohttp.TCPConnector(ssl=context, force_close=True)
        async with (
            aiohttp.ClientSession(connector=per_request) as requests,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
        ):
            tasks = [
                asyncio.create_task(self._requests(requests, "GET")),
                asyncio.create_task(self._requests(requests, "POST")),
                *(asyncio.create_task(self._held_call(http, n)) for n in range(self.calls)),
            ]
            async with asyncio.timeout(LOAD_DEADLINE_SECONDS):
                results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    self._record(self.dropped, f"{type(result).__name__}: {result}")

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the load generator did not stop"

    def assert_clean(self) -> None:
        # The services' own warnings say why (they are lost with the removed replicas).
        assert self.failures == [], (self.failures[:10], self.stack.logs.notable())
        assert self.dropped == [], (self.dropped, self.stack.logs.notable())
        assert self.hung_up == self.calls
        assert self.answered["GET"] > 5 and self.answered["POST"] > 5, self.answered
