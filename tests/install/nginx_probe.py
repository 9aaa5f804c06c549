"""Run the rendered nginx config for real and report what it does, as JSON on stdout.

Run inside a private mount and network namespace (`unshare --mount --net`): there the
service names resolve to the loopback through a bind-mounted /etc/hosts and the container's
fixed ports (8080, 8443, 3000, 4001) are free, so the exact rendered files run unchanged.
Stand-ins for the api (echoes the request headers it got) and the gateway (a WebSocket
echo) listen where the upstreams point.

Usage: python -m tests.install.nginx_probe INSTALL_DIR WORK_DIR
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from orbisctl.render import API_PORT, GATEWAY_PORT, NGINX_HTTP_PORT, NGINX_HTTPS_PORT
from tests.install.helpers import SERVICE_NAMES, nginx_conf_dir
from tests.services import wait_for_port

WS_TOKEN = "probe-session-token-must-not-be-logged"


async def echo_headers(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs, "headers": dict(request.headers)})


async def echo_websocket(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    async for message in socket:
        if message.type is aiohttp.WSMsgType.TEXT:
            await socket.send_str(f"echo:{message.data}")
    return socket


async def start_upstreams() -> list[web.AppRunner]:
    api = web.Application()
    api.router.add_route("*", "/{tail:.*}", echo_headers)
    gateway = web.Application()
    gateway.router.add_get("/ws/call", echo_websocket)
    runners = []
    for app, port in ((api, API_PORT), (gateway, GATEWAY_PORT)):
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    return runners


def tls_context(ca_file: Path, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if max_version is not None:
        context.maximum_version = max_version
    return context


async def probe(install: Path, domain: str) -> dict[str, Any]:
    runners = await start_upstreams()
    try:
        return await probe_http(install, domain)
    finally:
        for runner in runners:
            await runner.cleanup()


def negotiated(install: Path, domain: str, max_version: ssl.TLSVersion | None) -> list[str]:
    """TLS version and cipher nginx agrees to with a client capped at `max_version`."""
    context = tls_context(install / "tls" / "ca.crt", max_version=max_version)
    with (
        socket.create_connection(("127.0.0.1", NGINX_HTTPS_PORT), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=domain) as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None  # the handshake is done
        return [str(tls.version()), cipher[0]]


async def probe_http(install: Path, domain: str) -> dict[str, Any]:
    ca = install / "tls" / "ca.crt"
    base = f"https://{domain}:{NGINX_HTTPS_PORT}"
    found: dict[str, Any] = {}
    resolver = aiohttp.ThreadedResolver()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls_context(ca), resolver=resolver)
    ) as http:
        async with http.get(
            f"http://{domain}:{NGINX_HTTP_PORT}/dashboard/?x=1", allow_redirects=False
        ) as response:
            found["redirect"] = [response.status, response.headers.get("Location")]
        async with http.get(f"{base}/healthz") as response:
            found["healthz"] = [response.status, await response.text()]
            found["healthz_headers"] = dict(response.headers)
        async with http.get(f"{base}/api/v1/echo?q=1") as response:
            found["api"] = [response.status, await response.json()]
            found["api_headers"] = dict(response.headers)
        async with http.ws_connect(
            f"wss://{domain}:{NGINX_HTTPS_PORT}/ws/call?token={WS_TOKEN}"
        ) as ws:
            await ws.send_str("hello")
            found["websocket"] = (await ws.receive(timeout=10)).data
        statuses = []
        for _ in range(12):
            async with http.post(f"{base}/api/v1/auth/login", json={}) as response:
                statuses.append(response.status)
        found["login_statuses"] = statuses
    return found


@contextmanager
def running_nginx(install: Path, work: Path, hosts: str) -> Iterator[Path]:
    """The install's rendered nginx, running in this (private) namespace with `hosts` as
    /etc/hosts; yields the access log's path."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    (work / "hosts").write_text(hosts)
    subprocess.run(["mount", "--bind", str(work / "hosts"), "/etc/hosts"], check=True)
    conf = nginx_conf_dir(install, work)
    access_log = work / "access.log"
    with access_log.open("wb") as log:
        nginx = subprocess.Popen(
            [
                "nginx",
                "-e",
                "stderr",
                "-p",
                f"{work}/",
                "-c",
                str(conf / "nginx.conf"),
                "-g",
                f"pid {work}/nginx.pid; daemon off;",
            ],
            stdout=log,
        )
        try:
            wait_for_port(NGINX_HTTPS_PORT)
            yield access_log
        finally:
            nginx.terminate()
            nginx.wait(timeout=20)


def main(install: Path, work: Path, domain: str) -> dict[str, Any]:
    with running_nginx(install, work, f"127.0.0.1 localhost {domain} {SERVICE_NAMES}\n") as log:
        found = asyncio.run(probe(install, domain))
        found["tls12"] = negotiated(install, domain, ssl.TLSVersion.TLSv1_2)
        found["tls13"] = negotiated(install, domain, None)
    found["access_log"] = log.read_text()
    return found


if __name__ == "__main__":
    install_dir, work_dir, domain_name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    print(json.dumps(main(install_dir, work_dir, domain_name)))
