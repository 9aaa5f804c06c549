"""The three-node swarm lab (`scripts/swarm-lab`): three dockerd in their own network namespaces.

The fixture of the Swarm suite (issue 18) in its smallest form: the lab comes up, its three
nodes are Ready, and a replicated service runs on all of them, its tasks reaching each other
over an overlay network (DNS round-robin: the kernel has no IPVS, so no VIP and no ingress
routing mesh; see docs/swarm-spike.md) and the host reaching a host-mode port on every node.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.swarm.conftest import Node, running_lab, skip_reason, wait_for

_reason = skip_reason()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]


def _image() -> str | None:
    """A local image of the main engine with python3 (built by the Docker suite's images step)."""
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "orbisvoice/python"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return out[0] if out else None


@pytest.fixture(scope="module")
def swarm() -> Iterator[list[Node]]:
    image = _image()
    if image is None:
        pytest.skip("no orbisvoice/python image in the main engine (build the images first)")
    with running_lab(every_node=[image]) as nodes:
        yield nodes


def test_three_nodes_are_ready(swarm: list[Node]) -> None:
    manager = swarm[0]
    rows = manager.docker("node", "ls", "--format", "{{.Hostname}} {{.Status}}").split("\n")
    assert sorted(r for r in rows if r) == ["node1 Ready", "node2 Ready", "node3 Ready"]


def test_a_replicated_service_runs_across_the_nodes(swarm: list[Node]) -> None:
    manager = swarm[0]
    image = _image()
    assert image is not None
    started = time.monotonic()
    manager.docker("network", "create", "-d", "overlay", "--attachable", "lab")
    manager.docker(
        "service", "create", "-d", "--no-resolve-image", "--name", "web", "--replicas", "3",
        "--network", "lab", "--endpoint-mode", "dnsrr", "--stop-signal", "SIGKILL",
        "--publish", "mode=host,target=8080,published=18080",
        image, "python3", "-m", "http.server", "8080",
    )  # fmt: skip

    def converged() -> bool:
        out = manager.docker("service", "ls", "--filter", "name=web", "--format", "{{.Replicas}}")
        return out.strip() == "3/3"

    wait_for(converged, "3/3 replicas of web")
    print(f"service converged in {time.monotonic() - started:.1f}s")
    placed = manager.docker(
        "service", "ps", "web", "--filter", "desired-state=running", "--format", "{{.Node}}"
    ).split()
    assert sorted(placed) == ["node1", "node2", "node3"]

    # The host reaches a host-mode port on every node at the node's address.
    for node in swarm:
        done = subprocess.run(
            ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://{node.address}:18080/"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.stdout == "200", f"{node.name}:18080 answered {done.stdout!r}"

    # Over the overlay, a task on node1 reaches every task (two of them on other nodes).
    container = manager.docker("ps", "-q", "--filter", "name=web").split()[0]
    probe = (
        "import socket, urllib.request\n"
        "ips = socket.gethostbyname_ex('tasks.web')[2]\n"
        "codes = [urllib.request.urlopen(f'http://{ip}:8080/', timeout=5).status for ip in ips]\n"
        "print(len(ips), sorted(set(codes)))\n"
    )
    assert manager.docker("exec", container, "python3", "-c", probe).strip() == "3 [200]"
