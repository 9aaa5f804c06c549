"""End to end on a real Compose stack: rotations under HTTPS load through nginx, and a
rotation killed mid-roll then resumed. Zero failed requests; old values refused after."""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pytest
import yaml

from orbisctl import engine
from tests.services import free_port

pytestmark = pytest.mark.docker

ORBISCTL = [str(Path(sys.executable).parent / "orbisctl")]
IMAGES = {"orbisvoice/runtime:0.1.0", "orbisvoice/postgres:15-0.1.0", "orbisvoice/redis:7-0.1.0"}
# Under the API's public rate limit (120/minute by default), so every answer is the API's own.
REQUEST_INTERVAL_SECONDS = 0.6


def orbisctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORBISCTL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Stack:
    root: Path
    https_port: int
    project: str

    def secret(self, name: str) -> str:
        return (self.root / "secrets" / name).read_text()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = engine.connect()
    tags = {tag for image in client.images.list() for tag in image.tags}
    if not tags >= IMAGES:
        pytest.skip("the appliance's local images are not built (`orbisctl images build`)")
    root = tmp_path_factory.mktemp("e2e") / "orbis"
    https_port = free_port()
    init = orbisctl(
        "init", "--dir", str(root), "--non-interactive", "--model", "emulator",
        "--image-source", "local", "--http-port", str(free_port()),
        "--https-port", str(https_port),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    project = f"rote2e{secrets.token_hex(3)}"
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    config["project_name"] = project
    (root / "orbis.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert orbisctl("render", "--dir", str(root)).returncode == 0
    try:
        up = orbisctl("up", "--dir", str(root), "--timeout", "400")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        yield Stack(root, https_port, project)
    finally:
        orbisctl("down", "--dir", str(root), "--volumes", "--yes", timeout=300)


@dataclass
class Load:
    """One client asking the API (through nginx TLS) for an unknown agent: 404 is success."""

    stack: Stack
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.stack.root / "tls" / "ca.crt"))
        url = f"https://localhost:{self.stack.https_port}/api/v1/widget/agents/unknown-agent"
        deadline = time.monotonic() + 900
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, context=context, timeout=15)
                self.failures.append("200 for an unknown agent")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    self.answered += 1
                else:
                    self.failures.append(f"HTTP {exc.code}")
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(REQUEST_INTERVAL_SECONDS)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _internal_token_answer(stack: Stack, token: str) -> str:
    """The API's error code for POST /internal/calls with `token`, asked from a gateway."""
    client = engine.connect()
    gateway = next(
        container
        for container in engine.project_containers(client, stack.project)
        if container.labels.get(engine.SERVICE_LABEL) == "gateway" and container.status == "running"
    )
    script = (
        "import json, os, urllib.request, urllib.error\n"
        "request = urllib.request.Request('http://api:3000/internal/calls', method='POST',"
        ' data=b\'{"token": "x", "origin": "https://a.example", "instance_id": "t"}\','
        " headers={'Authorization': 'Bearer ' + os.environ['TOKEN'],"
        " 'Content-Type': 'application/json'})\n"
        "try:\n    urllib.request.urlopen(request, timeout=10)\n"
        "except urllib.error.HTTPError as exc:\n"
        "    print(json.load(exc)['error']['code'])\n"
    )
    exit_code, output = gateway.exec_run(["python", "-c", script], environment={"TOKEN": token})
    assert exit_code == 0, output
    return str(output.decode().strip().splitlines()[-1])


def _all_healthy(stack: Stack) -> None:
    status = orbisctl("status", "--dir", str(stack.root), "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    rows = rows["services"] if isinstance(rows, dict) else rows
    long_running = [row for row in rows if row.get("state") != "exited"]
    assert long_running and all(row.get("health") == "healthy" for row in long_running), rows


def test_rotations_under_load_and_a_killed_rotation_resumed(stack: Stack, tmp_path: Path) -> None:
    old_token = stack.secret("internal_token").strip()
    old_kid = json.loads(stack.secret("jwt_keys.json"))["keys"][0]["kid"]
    new_key_file = tmp_path / "gemini_key"
    new_key_file.write_text(f"emulator-{secrets.token_urlsafe(32)}\n")
    new_key_file.chmod(0o600)

    with Load(stack) as load:
        rotated = orbisctl(
            "rotate-keys", "--dir", str(stack.root), "--internal-token", "--jwt",
            "--gemini-key-file", str(new_key_file),
        )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr[-2000:]
    assert load.failures == [] and load.answered > 20
    new_token = stack.secret("internal_token").strip()
    assert new_token != old_token
    assert _internal_token_answer(stack, old_token) == "unauthorized"
    assert _internal_token_answer(stack, new_token) != "unauthorized"
    ring = json.loads(stack.secret("jwt_keys.json"))["keys"]
    assert {key["kid"]: key["use"] for key in ring}[old_kid] == "verify"
    assert stack.secret("gemini_api_key").strip() == new_key_file.read_text().strip()
    for value in (old_token, new_token, new_key_file.read_text().strip()):
        assert value not in rotated.stdout + rotated.stderr

    # Killed mid-roll, then resumed under load.
    journal = stack.root / "rotation" / "journal.json"
    process = subprocess.Popen(
        [*ORBISCTL, "rotate-keys", "--dir", str(stack.root), "--internal-token"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    done = 0
    while done < 3 and time.monotonic() < deadline and process.poll() is None:
        if journal.exists():
            done = sum(
                step["status"] == "done" for step in json.loads(journal.read_text())["steps"]
            )
        time.sleep(0.2)
    assert done >= 3, "the rotation never reached its roll"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert len(stack.secret("internal_token").splitlines()) == 2  # old and new accepted
    with Load(stack) as load:
        resumed = orbisctl("rotate-keys", "--dir", str(stack.root), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load.failures == []
    final_token = stack.secret("internal_token").strip()
    assert final_token not in (new_token, old_token)
    assert _internal_token_answer(stack, new_token) == "unauthorized"
    assert not journal.exists()
    _all_healthy(stack)
