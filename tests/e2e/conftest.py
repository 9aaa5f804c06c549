"""One real stack for the end-to-end module: `orbisctl init` into a temp dir (emulator model,
local images, free high ports, its own compose project), `images build`, `up`; `down
--volumes` at the end. Durations go to test-artifacts/e2e-timings.json."""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import docker
import pytest
import yaml
from typer.testing import CliRunner, Result

from orbisctl import images
from orbisctl.cli import app
from orbisctl.core import engine
from tests.services import free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
UP_TIMEOUT_SECONDS = 300


def orbisctl(*args: str) -> Result:
    """orbisctl in-process; core bugs raise instead of hiding in the result."""
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@dataclass
class Stack:
    root: Path
    project: str
    https_port: int
    http_port: int
    client: docker.DockerClient
    timings: dict[str, float] = field(default_factory=dict)
    source_key: str = ""  # the source tree the images were built from

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts only the install's own CA, as a browser given that CA would."""
        return ssl.create_default_context(cafile=str(self.root / "tls" / "ca.crt"))

    def cli(self, *args: str) -> Result:
        return orbisctl(*args, "--dir", str(self.root))

    def containers(self, service: str | None = None) -> list[docker.models.containers.Container]:
        found = engine.project_containers(self.client, self.project)
        return [c for c in found if service is None or c.labels[engine.SERVICE_LABEL] == service]


def _engine() -> docker.DockerClient:
    try:
        return engine.connect()
    except Exception as exc:
        if os.environ.get("CI"):
            raise  # CI must run the end-to-end suite, never skip it
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = _engine()
    root = tmp_path_factory.mktemp("e2e") / "orbis"
    root.mkdir()
    project = f"orbis-e2e-{secrets.token_hex(3)}"
    (root / "orbis.yaml").write_text(
        yaml.safe_dump(
            {
                "project_name": project,
                "images": {"source": "local"},
                # test_backup's restore probe asks 4 times a second without credentials;
                # test_archive signs up and logs in a dozen times a minute.
                "rate_limits": {"public_per_minute": 1200, "login_per_minute": 120},
            }
        )
    )
    http_port, https_port = free_port(), free_port()
    result = orbisctl(
        "init", "--dir", str(root), "--non-interactive", "--model", "emulator",
        "--http-port", str(http_port), "--https-port", str(https_port),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    running = Stack(root, project, https_port, http_port, client)
    running.source_key = images.hash_inputs([], images.project_sources(images.source_root()))
    try:
        started = time.monotonic()
        result = running.cli("images", "build")
        running.timings["images_build_seconds"] = round(time.monotonic() - started, 1)
        assert result.exit_code == 0, result.output
        started = time.monotonic()
        result = running.cli("up", "--timeout", str(UP_TIMEOUT_SECONDS))
        running.timings["up_seconds"] = round(time.monotonic() - started, 1)
        assert result.exit_code == 0, result.output + _logs(running)
        yield running
    finally:
        # Whatever the tests did, leave no containers, networks or volumes behind.
        subprocess.run(
            [
                "docker",
                "compose",
                "--project-name",
                project,
                "down",
                "--volumes",
                "--remove-orphans",
            ],
            capture_output=True,
            check=False,
            timeout=180,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "e2e-timings.json").write_text(json.dumps(running.timings, indent=2) + "\n")


def _logs(stack: Stack) -> str:
    return subprocess.run(
        ["docker", "compose", "--project-name", stack.project, "logs", "--tail", "30"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    ).stdout


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that trusts the stack's own CA, with a new connection for every
    request: restores and rotations reload nginx, whose old workers close the connections a
    pooled client would reuse (a browser sends the request again then; aiohttp fails it with
    'Server disconnected')."""
    connector = aiohttp.TCPConnector(ssl=stack.ssl_context(), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
