"""The container probes against real servers: HTTP on loopback, a closed port, real Redis."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from healthchecks import probes
from tests.services import RedisServer, free_port


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/readyz":
            body = b'{"status": "unavailable", "checks": {"database": "connection refused"}}'
            self.send_response(503)
        elif self.path == "/moved":
            body = b""
            self.send_response(302)
            self.send_header("Location", "/healthz")
        else:
            body = b"ok"
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healthchecks", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_http_2xx_is_healthy(http_server: str) -> None:
    result = run_probe("http", f"{http_server}/healthz")
    assert result.returncode == 0
    assert result.stdout.strip() == f"{http_server}/healthz: 200: ok"


def test_http_failure_reports_status_and_body(http_server: str) -> None:
    result = run_probe("http", f"{http_server}/readyz")
    assert result.returncode == 1
    assert "HTTP 503" in result.stdout
    assert "database" in result.stdout  # the reason reaches docker's health log


def test_http_redirect_is_not_followed(http_server: str) -> None:
    assert not probes.http(f"{http_server}/moved").ok


def test_closed_port_fails_fast() -> None:
    port = free_port()
    result = run_probe("--timeout", "2", "tcp", "127.0.0.1", str(port))
    assert result.returncode == 1
    assert "refused" in result.stdout.lower()
    assert not probes.http(f"http://127.0.0.1:{port}/").ok


def test_tcp_open_port(http_server: str) -> None:
    port = http_server.rsplit(":", 1)[1]
    assert run_probe("tcp", "127.0.0.1", port).returncode == 0


def test_non_http_url_is_refused() -> None:
    result = probes.http("file:///etc/passwd")
    assert not result.ok
    assert "not an http(s) URL" in result.detail


def test_redis_ping_with_and_without_the_password(redis_srv: RedisServer, tmp_path: Path) -> None:
    secret = tmp_path / "redis_password"
    secret.write_text(redis_srv.password + "\n")
    ok = run_probe(
        "redis",
        "127.0.0.1",
        str(redis_srv.port),
        "--user",
        redis_srv.user,
        "--password-file",
        str(secret),
    )
    assert ok.returncode == 0, ok.stdout
    assert "PONG" in ok.stdout
    wrong = probes.redis_ping(
        "127.0.0.1", redis_srv.port, user=redis_srv.user, password="not-the-password"
    )
    assert not wrong.ok
    assert "AUTH refused" in wrong.detail
    anonymous = probes.redis_ping("127.0.0.1", redis_srv.port)
    assert not anonymous.ok
