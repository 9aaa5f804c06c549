"""Test helpers for the gateway: a widget-like WebSocket client, audio, a gateway on a free port."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web

from runtime.emulator.audio import silence, synthetic_speech
from runtime.gateway.app import create_app
from runtime.gateway.keys import GATEWAY
from runtime.gateway.process import Gateway
from runtime.gateway.settings import GatewaySettings

ORIGIN = "https://shop.example"
INPUT_RATE = 16_000
FRAME_MS = 20
FRAME_BYTES = INPUT_RATE * 2 * FRAME_MS // 1000


def speech_then_silence(speech_ms: int = 400, silence_ms: int = 600) -> list[bytes]:
    """A spoken utterance followed by the pause that ends the turn, as 20 ms frames."""
    pcm = synthetic_speech(speech_ms, "tone", 300.0, rate=INPUT_RATE) + silence(silence_ms)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


@dataclass
class RunningGateway:
    url: str
    app: web.Application
    runner: web.AppRunner

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]

    def ws_url(self, token: str) -> str:
        return f"{self.url.replace('http', 'ws', 1)}/ws/call?token={token}"


@asynccontextmanager
async def running_gateway(
    settings: GatewaySettings, *, gemini_ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RunningGateway]:
    app = create_app(replace(settings, port=0), gemini_ssl_context=gemini_ssl_context)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield RunningGateway(url=f"http://{host}:{port}", app=app, runner=runner)
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
    http: aiohttp.ClientSession, gateway: RunningGateway, token: str, *, origin: str = ORIGIN
) -> AsyncIterator[WidgetCall]:
    async with http.ws_connect(
        gateway.ws_url(token), headers={"Origin": origin}, autoping=True
    ) as ws:
        call = WidgetCall(ws=ws)
        call.start()
        try:
            yield call
        finally:
            await ws.close()
            if call._reader is not None:
                call._reader.cancel()


async def handshake_error(
    http: aiohttp.ClientSession, gateway: RunningGateway, token: str, *, origin: str | None
) -> tuple[int, str]:
    """Status and error code of a refused WebSocket handshake (read as plain HTTP)."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    if origin is not None:
        headers["Origin"] = origin
    async with http.get(f"{gateway.url}/ws/call?token={token}", headers=headers) as response:
        body = await response.json()
        return response.status, body["error"]["code"]


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll a condition another process changes (no event to wait on), bounded in time."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)
