"""`python -m runtime.api` on SIGTERM: it keeps answering for its drain period (each answer
closing its connection), then stops listening and exits cleanly. A proxy rolling the API
therefore sees every request answered: none lands on a connection closed under it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.common.keyring import new_keyring
from tests.services import free_port, wait_for_port

pytestmark = pytest.mark.integration

DRAIN_SECONDS = 2


@pytest.fixture
def api_process(
    tmp_path: Path, database_url: str, redis_url: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    (tmp_path / "jwt_keys.json").write_text(new_keyring().dumps())
    (tmp_path / "internal_token").write_text("drain-test-token\n")
    port = free_port()
    env = {
        **os.environ,
        "ORBIS_DATABASE_URL": database_url,
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_JWT_KEYS_FILE": str(tmp_path / "jwt_keys.json"),
        "ORBIS_INTERNAL_TOKEN_FILE": str(tmp_path / "internal_token"),
        "ORBIS_PUBLIC_URL": "https://voice.example.com",
        "ORBIS_API_PORT": str(port),
        "ORBIS_API_DRAIN_SECONDS": str(DRAIN_SECONDS),
    }
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.api"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        log.close()


def _ask(conn: http.client.HTTPConnection, method: str, path: str) -> http.client.HTTPResponse:
    body = json.dumps({"email": "nobody@example.com"}) if method == "POST" else None
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response


def test_sigterm_drains_then_stops(api_process: tuple[subprocess.Popen[bytes], int]) -> None:
    process, port = api_process
    kept_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    first = _ask(kept_alive, "GET", "/healthz")
    assert first.status == 200 and first.getheader("Connection") != "close"

    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # New connections are still accepted and answered, now with `Connection: close`.
    deadline = signalled + DRAIN_SECONDS
    while True:
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answer = _ask(fresh, "GET", "/healthz")
        fresh.close()
        assert answer.status == 200
        if answer.getheader("Connection") == "close":
            break
        assert time.monotonic() < deadline, "the API never started draining"
    # The proxy's kept-alive connection: its POST is answered, and the API closes it after.
    posted = _ask(kept_alive, "POST", "/api/v1/auth/login")
    assert posted.status < 500 and posted.getheader("Connection") == "close"
    kept_alive.close()

    assert process.wait(timeout=DRAIN_SECONDS + 15) == 0
    assert time.monotonic() - signalled >= DRAIN_SECONDS
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).connect()
