"""What the rendered nginx answers while the services behind it are away: in maintenance (the
flag orbisctl creates in nginx's tmpfs), with the api stopped (connection refused) and with
the api's address gone silent (a stopped container's address: connects time out). Runs in a
private mount and network namespace like nginx_probe.py; the flag's directory is a tmpfs of
this namespace, as /tmp is nginx's own tmpfs in the container. Prints, as JSON, each answer's
status, headers (names in lower case), body and how long it took.

Usage: python -m tests.install.nginx_unavailable_probe INSTALL_DIR WORK_DIR
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from orbisctl import render
from orbisctl.render import NGINX_HTTPS_PORT
from tests.install.nginx_probe import running_nginx, start_upstreams, tls_context

MAINTENANCE_FLAG = Path(render.MAINTENANCE_FLAG)
SILENT = "10.77.0.2"  # no host behind it: SYNs vanish, as to a stopped container's address


async def answer(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    started = time.monotonic()
    async with http.get(url, headers={"X-Request-Id": "chosen-by-the-client"}) as response:
        body = await response.text()
        return {
            "status": response.status,
            "headers": {name.lower(): value for name, value in response.headers.items()},
            "body": body,
            "seconds": round(time.monotonic() - started, 3),
        }


async def answers(install: Path) -> dict[str, Any]:
    base = f"https://localhost:{NGINX_HTTPS_PORT}"
    found: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(ssl=tls_context(install / "tls" / "ca.crt"))
    async with aiohttp.ClientSession(connector=connector) as http:
        runners = await start_upstreams()
        try:
            found["served"] = await answer(http, f"{base}/api/v1/echo")
            await asyncio.to_thread(MAINTENANCE_FLAG.touch)
            found["maintenance_api"] = await answer(http, f"{base}/api/v1/echo")
            found["maintenance_login"] = await answer(http, f"{base}/api/v1/auth/login")
            found["maintenance_ws"] = await answer(http, f"{base}/ws/call?token=t")
            found["maintenance_healthz"] = await answer(http, f"{base}/healthz")
            await asyncio.to_thread(MAINTENANCE_FLAG.unlink)
            found["after_maintenance"] = await answer(http, f"{base}/api/v1/echo")
        finally:
            for runner in runners:
                await runner.cleanup()
        found["stopped_api"] = await answer(http, f"{base}/api/v1/echo")
        found["stopped_gateway"] = await answer(http, f"{base}/ws/call?token=t")
    return found


def silent_link() -> None:
    """A link on which whatever is sent to SILENT goes unanswered (a veth pair whose far end
    has no address; a fixed neighbour entry, so not even ARP fails)."""
    for command in (
        "ip link add silent type veth peer name silent-far",
        "ip addr add 10.77.0.1/24 dev silent",
        "ip link set silent up",
        "ip link set silent-far up",
        f"ip neigh add {SILENT} lladdr 02:00:00:00:77:02 dev silent nud permanent",
    ):
        subprocess.run(command.split(), check=True)


async def silent_answer(install: Path) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(ssl=tls_context(install / "tls" / "ca.crt"))
    async with aiohttp.ClientSession(connector=connector) as http:
        return await answer(http, f"https://localhost:{NGINX_HTTPS_PORT}/api/v1/echo")


def main(install: Path, work: Path) -> dict[str, Any]:
    MAINTENANCE_FLAG.parent.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(MAINTENANCE_FLAG.parent)], check=True)
    with running_nginx(install, work, "127.0.0.1 localhost api gateway emulator\n"):
        found = asyncio.run(answers(install))
    silent_link()
    (work / "silent").mkdir()
    with running_nginx(install, work / "silent", f"127.0.0.1 localhost\n{SILENT} api gateway\n"):
        found["silent_api"] = asyncio.run(silent_answer(install))
    return found


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
