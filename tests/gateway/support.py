"""Test helpers for the gateway: a widget-like WebSocket client, audio, a gateway on a free port."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg
from aiohttp import web
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from runtime.emulator.audio import silence, synthetic_speech
from runtime.emulator.testing import EmulatorHandle
from runtime.gateway.app import create_app
from runtime.gateway.keys import GATEWAY
from runtime.gateway.process import Gateway
from runtime.gateway.settings import GatewaySettings
from tests.api.fixtures import ApiHarness, Tenant

ORIGIN = "https://shop.example"
INPUT_RATE = 16_000
FRAME_MS = 20
FRAME_BYTES = INPUT_RATE * 2 * FRAME_MS // 1000


def speech_then_silence(speech_ms: int = 400, silence_ms: int = 600) -> list[bytes]:
    """A spoken utterance followed by the pause that ends the turn, as 20 ms frames."""
    pcm = synthetic_speech(speech_ms, "tone", 300.0, rate=INPUT_RATE) + silence(silence_ms)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

WebhookHandler = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


async def _weather(body: dict[str, Any]) -> web.StreamResponse:
    return web.json_response({"city": body["arguments"].get("city"), "sky": "sunny"})


def held_tool(release: asyncio.Event, answer: dict[str, Any]) -> WebhookHandler:
    """A tool webhook that answers only once `release` is set: a tool slower than the call."""

    async def handler(body: dict[str, Any]) -> web.StreamResponse:
        await release.wait()
        return web.json_response(answer)

    return handler


@dataclass
class Webhook:
    """A tenant's tool webhook, served by the test on loopback; records what the API sends."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    handler: WebhookHandler = _weather

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        return await self.handler(body)


@asynccontextmanager
async def running_webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = web.Application()
    app.router.add_post("/tool", hook.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hook.url = f"http://{host}:{port}/tool"
    try:
        yield hook
    finally:
        await runner.cleanup()


@dataclass
class Agents:
    """Agents and widget session tokens made through the real API, and what it stored."""

    api: ApiHarness
    tenant: Tenant
    webhook: Webhook
    database_url: str

    async def token(
        self, *, tool_timeout_seconds: float = 5.0, origin: str = ORIGIN, **fields: Any
    ) -> str:
        """A fresh agent (instructions may carry the emulator's control keyword) and a token."""
        if fields.pop("weather_tool", False):
            fields["tools"] = [
                {**WEATHER_TOOL, "url": self.webhook.url, "timeout_seconds": tool_timeout_seconds}
            ]
        fields.setdefault("allowed_origins", [ORIGIN])
        agent = await self.api.create_agent(self.tenant, **fields)
        session = await self.api.widget_session(agent["public_id"], origin=origin)
        return str(session["token"])

    async def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(
            self.database_url, row_factory=dict_row
        ) as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def transcript(self, call_id: str) -> list[tuple[int, str, str]]:
        rows = await self.query(
            "SELECT seq, role, text FROM transcript_segments WHERE call_id = %s ORDER BY seq",
            call_id,
        )
        return [(row["seq"], row["role"], row["text"]) for row in rows]

    async def call_row(self, call_id: str) -> dict[str, Any]:
        (row,) = await self.query(
            "SELECT end_reason, duration_ms, total_tokens, instance_id FROM calls WHERE id = %s",
            call_id,
        )
        return row


def gateway_settings(
    *,
    api_url: str,
    internal_token: str,
    redis_url: str,
    emulator: EmulatorHandle,
    **overrides: Any,
) -> GatewaySettings:
    values: dict[str, Any] = {
        "instance_id": "gw-test",
        "api_url": api_url,
        "internal_tokens": (internal_token,),
        "redis_url": redis_url,
        "gemini_api_key": emulator.api_key,
        "gemini_model": "gemini-live-test",
        "gemini_base_url": emulator.base_url,
        "heartbeat_seconds": 0.5,
        "transcript_flush_seconds": 0.3,
    }
    values.update(overrides)
    return GatewaySettings(**values)


@dataclass
class GatewayAddress:
    url: str

    def ws_url(self, token: str, *, param: str = "token") -> str:
        """The call URL; `param="resume"` for a call moved from a draining instance."""
        return f"{self.url.replace('http', 'ws', 1)}/ws/call?{param}={token}"


@dataclass
class RunningGateway(GatewayAddress):
    """A gateway app served in the test's own event loop."""

    app: web.Application

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]


@asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, *, gemini_ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RunningGateway]:
    app = create_app(settings.model_copy(update={"port": 0}), gemini_ssl_context=gemini_ssl_context)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield RunningGateway(url=f"http://{host}:{port}", app=app)
    finally:
        await runner.cleanup()


@dataclass
class WidgetCall:
    """What a widget sees of a call: its events in order and the model audio it received."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.events.append(json.loads(message.data))
            elif message.type is aiohttp.WSMsgType.BINARY:
                self.audio.extend(message.data)
            self._new.set()
        self._new.set()

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]

    async def wait_for(
        self, event_type: str, *, within: float = 10.0, **match: Any
    ) -> dict[str, Any]:
        """The first event of that type (and matching fields), waiting for it to arrive."""
        async with asyncio.timeout(within):
            while True:
                for event in self.events:
                    if event["type"] == event_type and all(
                        event.get(key) == value for key, value in match.items()
                    ):
                        return event
                if self.ws.closed and self._reader is not None and self._reader.done():
                    raise AssertionError(f"closed before {event_type} {match}: {self.events}")
                self._new.clear()
                await self._new.wait()

    async def wait_count(self, event_type: str, count: int, *, within: float = 10.0) -> None:
        """Wait until `count` events of that type have arrived."""
        async with asyncio.timeout(within):
            while len(self.of_type(event_type)) < count:
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"closed before {count} {event_type}: {self.events}")
                self._new.clear()
                await self._new.wait()

    async def wait_closed(self, *, within: float = 10.0) -> int | None:
        async with asyncio.timeout(within):
            if self._reader is not None:
                await self._reader
        return self.ws.close_code

    async def send_frames(self, frames: list[bytes], *, pace: float = 0.0) -> None:
        """Send audio frames; `pace` 1.0 is real time, 0 as fast as the socket takes them."""
        for frame in frames:
            await self.ws.send_bytes(frame)
            if pace:
                await asyncio.sleep(pace * FRAME_MS / 1000)


@asynccontextmanager
async def widget_call(
    http: aiohttp.ClientSession,
    gateway: GatewayAddress,
    token: str,
    *,
    origin: str = ORIGIN,
    param: str = "token",
) -> AsyncIterator[WidgetCall]:
    async with http.ws_connect(
        gateway.ws_url(token, param=param), headers={"Origin": origin}, autoping=True
    ) as ws:
        call = WidgetCall(ws=ws)
        call.start()
        try:
            yield call
        finally:
            await ws.close()
            if call._reader is not None:
                call._reader.cancel()


@asynccontextmanager
async def call_through_gateway(
    settings: GatewaySettings,
    emulator: EmulatorHandle,
    http: aiohttp.ClientSession,
    token: str,
) -> AsyncIterator[WidgetCall]:
    """One widget call to a gateway of its own that trusts the emulator's certificate."""
    async with (
        running_gateway(settings, gemini_ssl_context=emulator.ssl_context()) as gw,
        widget_call(http, gw, token) as call,
    ):
        yield call


async def speak_one_turn(call: WidgetCall) -> dict[str, Any]:
    """Wait for the call to start, say one utterance and wait for the whole reply.

    Returns the session.started event (it carries the call id)."""
    started = await call.wait_for("session.started")
    await call.send_frames(speech_then_silence())
    await call.wait_for("turn.complete")
    return started


async def refused_handshake(
    http: aiohttp.ClientSession, url: str, *, origin: str | None
) -> tuple[int, CIMultiDictProxy[str], Any]:
    """A WebSocket handshake to `url` (http://) read as plain HTTP: the status, headers and
    JSON body of a refusal."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    if origin is not None:
        headers["Origin"] = origin
    async with http.get(url, headers=headers) as response:
        return response.status, response.headers, await response.json()


async def handshake_error(
    http: aiohttp.ClientSession,
    gateway: GatewayAddress,
    token: str,
    *,
    origin: str | None,
    param: str = "token",
) -> tuple[int, str]:
    """Status and error code of a refused WebSocket handshake."""
    url = gateway.ws_url(token, param=param).replace("ws", "http", 1)
    status, _, body = await refused_handshake(http, url, origin=origin)
    return status, body["error"]["code"]


async def metric(
    http: aiohttp.ClientSession, gw: RunningGateway, name: str, **labels: str
) -> float:
    """A sample of the gateway's /metrics, read with prometheus-client's own parser."""
    async with http.get(f"{gw.url}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll a condition another process changes (no event to wait on), bounded in time."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


@dataclass
class DelayingProxy:
    """A TCP proxy in front of a real service that can hold each request back (a slow API)."""

    target_port: int
    delay: float = 0.0
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if delayed and self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [client_writer, server_writer]
        await asyncio.gather(
            self._pump(client_reader, server_writer, delayed=True),
            self._pump(server_reader, client_writer, delayed=False),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def delaying_proxy(target_url: str) -> AsyncIterator[DelayingProxy]:
    proxy = DelayingProxy(target_port=int(target_url.rsplit(":", 1)[1]))
    server = await asyncio.start_server(proxy._connection, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        server.close()
        for writer in proxy.writers:
            writer.close()
        await server.wait_closed()
