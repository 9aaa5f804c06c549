"""How the rendered nginx spreads call handshakes over two gateways when one of them is
draining (it answers 503 `server_busy` before the upgrade, as a draining gateway does): run
in a private mount and network namespace like nginx_probe.py, with `gateway` resolving to
127.0.0.1 (draining) and 127.0.0.2 (live). Prints, as JSON, the status of each handshake
through nginx and how many each stand-in saw.

Usage: python -m tests.install.nginx_gateways_probe INSTALL_DIR WORK_DIR HANDSHAKES
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from orbisctl.render import GATEWAY_PORT, NGINX_HTTPS_PORT
from tests.install.nginx_probe import running_nginx, tls_context

DRAINING, LIVE = "127.0.0.1", "127.0.0.2"


async def start_gateways(seen: Counter[str]) -> list[web.AppRunner]:
    async def draining(request: web.Request) -> web.Response:
        seen["draining"] += 1
        return web.json_response(
            {"error": {"code": "server_busy", "message": "try again"}},
            status=503,
            headers={"Retry-After": "2"},
        )

    async def live(request: web.Request) -> web.WebSocketResponse:
        seen["live"] += 1
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.close()
        return socket

    runners = []
    for handler, host in ((draining, DRAINING), (live, LIVE)):
        app = web.Application()
        app.router.add_get("/ws/call", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, host, GATEWAY_PORT).start()
        runners.append(runner)
    return runners


async def handshakes(install: Path, count: int) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    runners = await start_gateways(seen)
    statuses: list[int] = []
    try:
        connector = aiohttp.TCPConnector(ssl=tls_context(install / "tls" / "ca.crt"))
        async with aiohttp.ClientSession(connector=connector) as http:
            for number in range(count):
                url = f"wss://localhost:{NGINX_HTTPS_PORT}/ws/call?resume=t{number}"
                try:
                    async with http.ws_connect(url, headers={"Origin": "https://a.example"}):
                        statuses.append(101)
                except aiohttp.WSServerHandshakeError as exc:
                    statuses.append(exc.status)
    finally:
        for runner in runners:
            await runner.cleanup()
    return {"statuses": statuses, "seen": dict(seen)}


def main(install: Path, work: Path, count: int) -> dict[str, Any]:
    hosts = f"127.0.0.1 localhost\n{DRAINING} gateway\n{LIVE} gateway\n127.0.0.1 api emulator\n"
    with running_nginx(install, work, hosts):
        return asyncio.run(handshakes(install, count))


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))))
