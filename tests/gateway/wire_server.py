"""A scripted Live endpoint: records the raw frames the SDK sends and sends the raw frames a
test gives it, byte for byte. The emulator always writes well-formed messages; the lean wire
tests need odd ones too (snake keys, missing padding, mixed content, error objects)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web
from google import genai
from google.genai import types

from runtime.emulator.testing import CertPair, client_ssl_context, generate_self_signed_cert

MODEL = "gemini-live-wire-test"


@dataclass
class _Close:
    code: int
    reason: str


@dataclass
class ScriptedConnection:
    """One client connection: what it sent, and a queue of what to send it."""

    received: list[tuple[WSMsgType, str | bytes]] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    outgoing: asyncio.Queue[str | bytes | _Close] = field(default_factory=asyncio.Queue)

    def send(self, frame: str | bytes) -> None:
        """Queue a raw frame: str as a text frame, bytes as a binary frame (Gemini sends these)."""
        self.outgoing.put_nowait(frame)

    def close(self, code: int, reason: str) -> None:
        self.outgoing.put_nowait(_Close(code, reason))

    async def frames(self, count: int) -> list[tuple[WSMsgType, str | bytes]]:
        """The first `count` frames after setup, waiting (bounded) for them to arrive."""
        async with asyncio.timeout(10), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) > count)
        return self.received[1 : count + 1]


@dataclass
class WireServer:
    url: str
    cert: CertPair
    connections: asyncio.Queue[ScriptedConnection]

    def client(self) -> genai.Client:
        return genai.Client(
            api_key="wire-test-key",
            http_options=types.HttpOptions(
                base_url=self.url,
                async_client_args={"ssl": client_ssl_context(self.cert.cert_file)},
            ),
        )

    async def next_connection(self) -> ScriptedConnection:
        async with asyncio.timeout(10):
            return await self.connections.get()


async def _serve(connection: ScriptedConnection, ws: web.WebSocketResponse) -> None:
    async def read() -> None:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                async with connection.arrived:
                    connection.received.append((message.type, message.data))
                    connection.arrived.notify_all()

    reader = asyncio.create_task(read())
    try:
        await connection.frames(0)  # the setup message
        await ws.send_str('{"setupComplete": {}}')
        while True:
            item = await connection.outgoing.get()
            if isinstance(item, _Close):
                await ws.close(code=item.code, message=item.reason.encode())
                return
            if isinstance(item, bytes):
                await ws.send_bytes(item)
            else:
                await ws.send_str(item)
    finally:
        reader.cancel()


@asynccontextmanager
async def running_wire_server(directory: Path) -> AsyncIterator[WireServer]:
    cert = generate_self_signed_cert(directory)
    connections: asyncio.Queue[ScriptedConnection] = asyncio.Queue()

    async def live(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = ScriptedConnection()
        connections.put_nowait(connection)
        await _serve(connection, ws)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", live)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert_file, cert.key_file)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield WireServer(url=f"https://127.0.0.1:{port}", cert=cert, connections=connections)
    finally:
        await runner.cleanup()
