"""The stack on a three-node swarm (issue 18's first slice): `init` with target swarm, `up`,
an API request through nginx on two different nodes' host-mode 443, `status`, `down`.

node1 (manager) is the data node: postgres and redis run there, and their images are loaded
there only. The lab's kernel has no ESP, so `swarm.encrypted_overlay: false` (docs/swarm.md).
Durations are printed (`-s`) and written to test-artifacts/swarm-timings.json.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from orbisctl.cli import app
from orbisctl.core.config import parse_config
from orbisctl.render import image_refs
from tests.swarm.conftest import Node, main_engine_images, running_lab, skip_reason

_reason = skip_reason()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CONFIG = {
    "target": "swarm",
    "images": {"source": "local"},
    "gateway": {"replicas": 2},
    "swarm": {"encrypted_overlay": False},
}
UP_TIMEOUT_SECONDS = 180


@dataclass
class SwarmStack:
    root: Path
    project: str
    nodes: list[Node]
    timings: dict[str, float] = field(default_factory=dict)

    def cli(self, *args: str) -> Result:
        """orbisctl in-process against the manager (DOCKER_HOST, as an operator would)."""
        return CliRunner().invoke(
            app,
            [*args, "--dir", str(self.root)],
            env={"DOCKER_HOST": self.nodes[0].host},
            catch_exceptions=False,
        )

    def timed(self, name: str, *args: str) -> Result:
        started = time.monotonic()
        result = self.cli(*args)
        self.timings[name] = round(time.monotonic() - started, 1)
        print(f"orbisctl {' '.join(args)}: {self.timings[name]}s")
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmStack]:
    refs = image_refs(parse_config(CONFIG))
    edge, data = [refs.runtime, refs.nginx], [refs.postgres, refs.redis]
    missing = sorted(set(edge + data) - set(main_engine_images(*edge, *data)))
    if missing:
        pytest.skip(f"the main engine lacks {', '.join(missing)} (`orbisctl images build`)")
    started = time.monotonic()
    root = tmp_path_factory.mktemp("swarm") / "orbis"
    root.mkdir()
    project = f"orbis-sw-{secrets.token_hex(2)}"
    (root / "orbis.yaml").write_text(yaml.safe_dump({**CONFIG, "project_name": project}))
    with running_lab(every_node=edge, first_node=data) as nodes:
        running = SwarmStack(root, project, nodes)
        running.timings["lab_seconds"] = round(time.monotonic() - started, 1)
        try:
            nodes[0].docker("node", "update", "--label-add", "orbis.data=true", "node1")
            result = running.timed(
                "init_seconds", "init", "--non-interactive", "--model", "emulator"
            )
            assert result.exit_code == 0, result.output
            result = running.timed("up_seconds", "up", "--timeout", str(UP_TIMEOUT_SECONDS))
            assert result.exit_code == 0, result.output + _tasks(nodes[0], project)
            yield running
        finally:
            running.timings["module_seconds"] = round(time.monotonic() - started, 1)
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "swarm-timings.json").write_text(
                json.dumps(running.timings, indent=2) + "\n"
            )
            print(f"swarm stack timings: {running.timings}")


def _tasks(manager: Node, project: str) -> str:
    done = subprocess.run(
        ["docker", "-H", manager.host, "stack", "ps", "--no-trunc", project],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return done.stdout + done.stderr


def _signup(stack: SwarmStack, address: str) -> tuple[str, dict[str, str]]:
    """POST /api/v1/auth/signup to nginx on one node's host-mode 443, as https://localhost
    (the install's certificate), trusting only the install's CA."""
    body = json.dumps(
        {
            "org_name": "Shop",
            "email": f"owner-{secrets.token_hex(4)}@example.com",
            "password": "correct horse battery staple",
        }
    )
    done = subprocess.run(
        ["curl", "-sS", "-m", "15", "--cacert", str(stack.root / "tls" / "ca.crt"),
         "--resolve", f"localhost:443:{address}", "-H", "content-type: application/json",
         "-d", body, "-w", "\n%{http_code}", "https://localhost/api/v1/auth/signup"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, f"{address}: {done.stderr}"
    text, _, code = done.stdout.rpartition("\n")
    return code, json.loads(text)


def test_signup_through_nginx_on_two_nodes(stack: SwarmStack) -> None:
    for node in stack.nodes[1:]:  # workers: neither holds the data
        started = time.monotonic()
        code, body = _signup(stack, node.address)
        print(f"signup through {node.name} ({node.address}): {time.monotonic() - started:.2f}s")
        assert code == "201", (node.name, body)
        assert body["access_token"]


def test_status_shows_every_service_running(stack: SwarmStack) -> None:
    result = stack.cli("status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = {row["service"]: row for row in report["services"]}
    assert set(rows) == {"postgres", "redis", "api", "gateway", "emulator", "nginx"}
    assert all(row["running"] == row["desired"] > 0 for row in rows.values()), rows
    assert rows["postgres"]["nodes"] == ["node1"] and rows["redis"]["nodes"] == ["node1"]
    assert rows["nginx"]["nodes"] == ["node1", "node2", "node3"]
    assert rows["gateway"]["desired"] == 2
    assert [n["hostname"] for n in report["nodes"] if n["data"]] == ["node1"]
    assert "node1" in stack.cli("status").output


def test_a_verb_not_ready_on_a_swarm_is_refused(stack: SwarmStack) -> None:
    result = stack.cli("backup", "create")
    assert result.exit_code == 2
    assert "backup create does not run on target swarm yet (issue 18)" in result.output


def test_down_removes_the_stack_and_the_data_volumes(stack: SwarmStack) -> None:
    result = stack.timed("down_seconds", "down", "--volumes", "--yes")
    assert result.exit_code == 0, result.output
    assert "deleted the data volumes on this node" in result.output
    manager = stack.nodes[0]
    label = f"label=com.docker.stack.namespace={stack.project}"
    assert manager.docker("service", "ls", "-q", "--filter", label).strip() == ""
    assert manager.docker("secret", "ls", "-q", "--filter", label).strip() == ""
    assert manager.docker("volume", "ls", "-q", "--filter", f"name={stack.project}_") == ""
