"""The Compose roller on a real engine: a two-replica service picks up a replaced secret file
with never fewer than two healthy replicas, a failing replica stops the roll, and a roll cut
short after its surge resumes to the size it had."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orbisctl import __version__
from orbisctl.core import engine
from orbisctl.core.config import OrbisConfig, dump_config
from orbisctl.core.errors import EngineError, UnhealthyError
from orbisctl.core.install import open_install
from orbisctl.rotation.compose import ComposeRoller
from orbisctl.rotation.secretfiles import SecretStore

pytestmark = pytest.mark.docker

IMAGE = f"orbisvoice/python:3.11-{__version__}"
# Serves the token it read at start; healthy only when the token is not "broken".
SERVER = """
import http.server, pathlib
token = pathlib.Path('/run/secrets/token').read_text().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = token != 'broken'
        self.send_response(200 if ok else 500); self.end_headers(); self.wfile.write(token.encode())
http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()
"""
HEALTH = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000', timeout=1)"


def _compose_text() -> str:
    command = ["python3", "-c", SERVER]
    return (
        "services:\n"
        "  web:\n"
        f"    image: {IMAGE}\n"
        f"    command: {command!r}\n"
        "    stop_grace_period: 2s\n"
        "    secrets: [token]\n"
        "    healthcheck:\n"
        f'      test: ["CMD", "python3", "-c", "{HEALTH}"]\n'
        "      interval: 1s\n"
        "      timeout: 2s\n"
        "      retries: 3\n"
        "secrets:\n"
        "  token:\n"
        "    file: ./secrets/token\n"
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    client = engine.connect()
    images = {tag for image in client.images.list() for tag in image.tags}
    if IMAGE not in images:
        pytest.skip(f"{IMAGE} is not built here (`orbisctl images build`)")
    root = tmp_path / "install"
    (root / "secrets").mkdir(parents=True)
    name = f"rotroll{secrets.token_hex(3)}"
    (root / "orbis.yaml").write_text(dump_config(OrbisConfig(project_name=name)))
    (root / "compose.yaml").write_text(_compose_text())
    SecretStore.of_install(root).write_lines("token", "old-token")
    install = open_install(root)
    install.compose().run("up", "--detach", "--wait", "--scale", "web=2", timeout=120)
    try:
        yield root
    finally:
        install.compose().run("down", "--remove-orphans", "--timeout", "1", timeout=120)


def _tokens(roller: ComposeRoller) -> list[str]:
    found = []
    for container in roller.running("web"):
        result = engine.exec_in(
            container,
            [
                "python3",
                "-c",
                (
                    "import urllib.request;print(urllib.request.urlopen("
                    "'http://127.0.0.1:8000').read().decode())"
                ),
            ],
        )
        found.append(result.output)
    return sorted(found)


def test_roll_replaces_every_replica_without_losing_capacity(project: Path) -> None:
    roller = ComposeRoller(open_install(project), engine.connect(), health_timeout=60)
    before = {container.id for container in roller.running("web")}
    assert _tokens(roller) == ["old-token", "old-token"]
    SecretStore.of_install(project).write_lines("token", "new-token")
    healthy_counts: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        client = engine.connect()
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                listed = engine.project_containers(client, roller.install.config.project_name)
            except EngineError:  # a container removed between listing and inspecting it
                continue
            healthy_counts.append(
                sum(
                    1
                    for c in listed
                    if c.status == "running"
                    and (c.attrs.get("State", {}).get("Health") or {}).get("Status") == "healthy"
                )
            )
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        roller.roll("web")
    finally:
        stop.set()
        watcher.join(timeout=10)
    after = {container.id for container in roller.running("web")}
    assert len(after) == 2 and not after & before
    assert _tokens(roller) == ["new-token", "new-token"]
    assert len(healthy_counts) > 5
    assert min(healthy_counts) >= 2


def test_an_unhealthy_new_replica_stops_the_roll_and_keeps_the_old_ones(project: Path) -> None:
    roller = ComposeRoller(open_install(project), engine.connect(), health_timeout=60)
    before = {container.id for container in roller.running("web")}
    SecretStore.of_install(project).write_lines("token", "broken")
    with pytest.raises(UnhealthyError, match="unhealthy"):
        roller.roll("web")
    assert before <= {container.id for container in roller.running("web")}


def test_a_roll_cut_short_after_its_surge_resumes_to_the_same_size(project: Path) -> None:
    """A killed roll left one new replica beside the two old ones: the resumed roll retires an
    old one without a second surge and ends with two replicas, both new."""
    install = open_install(project)
    roller = ComposeRoller(install, engine.connect(), health_timeout=60)
    before = {container.id for container in roller.running("web")}
    SecretStore.of_install(project).write_lines("token", "new-token")
    install.compose().run(
        "up", "--detach", "--wait", "--no-recreate", "--scale", "web=3", timeout=120
    )  # fmt: skip
    assert len(roller.running("web")) == 3
    roller.roll("web", outdated=lambda container: container.id in before, replicas=2)
    after = {container.id for container in roller.running("web")}
    assert len(after) == 2 and not after & before
    assert _tokens(roller) == ["new-token", "new-token"]
