"""The swarm lab (`scripts/swarm-lab`) for the Swarm suite (issue 18): three dockerd in their
own network namespaces, node1 the manager. `running_lab` brings it up with images of the main
engine loaded into its nodes and always takes it down again (docs/swarm-spike.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "scripts" / "swarm-lab"


def skip_reason() -> str | None:
    """Why the lab cannot run here, or None (each module skips with it)."""
    if os.geteuid() != 0:
        return "the swarm lab needs root (network namespaces, dockerd)"
    if shutil.which("ip") is None or shutil.which("dockerd") is None:
        return "the swarm lab needs iproute2 and dockerd"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` is unavailable: {probe.stderr.strip()}"
    return None


def lab(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [str(LAB), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    print(done.stderr, end="")
    assert done.returncode == 0, f"swarm-lab {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


class Node:
    def __init__(self, line: str) -> None:
        self.name, self.role, self.address, self.host = line.split()

    def docker(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            ["docker", "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"docker {' '.join(args)} on {self.name}: {done.stderr}"
        return done.stdout


def _load(nodes: Sequence[Node], images: Sequence[str]) -> None:
    """`docker save` from the main engine once, `load` into the nodes in parallel."""
    if not images or not nodes:
        return
    with tempfile.TemporaryDirectory(dir="/var/tmp") as scratch:
        tar = Path(scratch) / "images.tar"
        subprocess.run(["docker", "save", "-o", str(tar), *images], check=True, timeout=300)
        loads = [
            subprocess.Popen(["docker", "-H", node.host, "load", "-q", "-i", str(tar)],
                             stdout=subprocess.DEVNULL)
            for node in nodes
        ]  # fmt: skip
        assert all(p.wait(timeout=300) == 0 for p in loads), f"loading {images} failed"


@contextmanager
def running_lab(
    *, every_node: Sequence[str] = (), first_node: Sequence[str] = ()
) -> Iterator[list[Node]]:
    """Three nodes with `every_node` images loaded into each and `first_node` only into
    node1 (what runs on the data node only); `swarm-lab down` whatever happens."""
    started = time.monotonic()
    try:
        nodes = [Node(line) for line in lab("up", "3").splitlines()]
        up = time.monotonic()
        _load(nodes, every_node)
        _load(nodes[:1], first_node)
        print(
            f"swarm lab: up in {up - started:.1f}s, images loaded in {time.monotonic() - up:.1f}s"
        )
        yield nodes
    finally:
        lab("down")
        print(f"swarm lab: {time.monotonic() - started:.1f}s in all, teardown included")


def main_engine_images(*names: str) -> list[str]:
    """Those of `names` (repository:tag) the main engine has."""
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "DOCKER_HOST": ""},
    ).stdout.split()
    return [name for name in names if name in out]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.25)
