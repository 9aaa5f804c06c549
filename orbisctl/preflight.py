"""Checks `orbisctl up` runs before touching anything: one `Problem` line per failure.

Everything is checked (not just up to the first failure), so an operator fixes all problems
in one round.
"""

from __future__ import annotations

import errno
import ipaddress
import shutil
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from orbisctl.core import engine
from orbisctl.core.config import EVERY_IPV4_ADDRESS
from orbisctl.core.errors import EngineError, ExitCode

GIB = 1024**3
MIN_FREE_DISK_GIB = 3.0  # images (~1.5 GiB local), volumes, logs, a backup
MIN_ENGINE_MEMORY_GIB = 2.0  # the stack's steady state is ~1 GiB; limits allow more


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str
    exit_code: ExitCode = ExitCode.CONFIG


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_secret_files(secrets_dir: Path, files: list[Path]) -> list[Problem]:
    """The secrets directory is 0700 and every secret file exists with mode 0600."""
    fix = "run `orbisctl init` to create missing secrets"
    problems = []
    if not secrets_dir.is_dir():
        return [Problem(f"{secrets_dir} does not exist", fix)]
    if _mode(secrets_dir) & 0o077:
        problems.append(
            Problem(
                f"{secrets_dir} is mode {_mode(secrets_dir):04o}, not 0700",
                f"chmod 700 {secrets_dir}",
            )
        )
    for path in files:
        if not path.is_file():
            problems.append(Problem(f"secret {path} is missing", fix))
        elif _mode(path) & 0o077:
            problems.append(
                Problem(f"secret {path} is mode {_mode(path):04o}, not 0600", f"chmod 600 {path}")
            )
    return problems


def secret_files(compose_config: dict[str, Any]) -> list[Path]:
    """The files the compose file mounts as secrets (what it will fail on if absent)."""
    secrets = compose_config.get("secrets") or {}
    return sorted(Path(spec["file"]) for spec in secrets.values() if spec.get("file"))


def port_problem(
    port: int, *, owned_by_us: Callable[[int], bool], address: str = EVERY_IPV4_ADDRESS
) -> Problem | None:
    """A problem when something other than our own nginx listens on `port` at `address`
    (`ports.bind_address`), or when this host has no such address."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return None  # a privileged port and we are not root; Docker binds it, not us
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return Problem(
                    f"ports.bind_address {address} is not an address of this host",
                    "set ports.bind_address in orbis.yaml to one of this host's addresses "
                    "(`ip -brief address` lists them) and run `orbisctl render`",
                    ExitCode.CONFIG,
                )
            if exc.errno == errno.EADDRINUSE and not owned_by_us(port):
                return Problem(
                    f"port {port} is already in use by another program",
                    f"stop it (`ss -ltnp 'sport = :{port}'` names it) or choose another port "
                    "under `ports:` in orbis.yaml and run `orbisctl render`",
                )
    return None


def published_ports(client: docker.DockerClient, project: str, install_root: Path) -> set[int]:
    """Host ports this install's own running containers publish (an idempotent `up`)."""
    ports: set[int] = set()
    for container in engine.project_containers(client, project, working_dir=install_root):
        bindings = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
        for host_side in bindings.values():
            for binding in host_side or []:
                if binding.get("HostPort", "").isdigit():
                    ports.add(int(binding["HostPort"]))
    return ports


def disk_problem(
    path: Path, *, what: str, minimum_gib: float = MIN_FREE_DISK_GIB
) -> Problem | None:
    free = shutil.disk_usage(path).free / GIB
    if free < minimum_gib:
        return Problem(
            f"only {free:.1f} GiB free on {path} ({what}); at least {minimum_gib:.0f} GiB needed",
            "free disk space (`docker system prune` removes unused images and build cache)",
        )
    return None


def engine_resources(client: docker.DockerClient) -> list[Problem]:
    try:
        info = client.info()
    except docker.errors.DockerException as exc:
        return [Problem(str(engine.api_error("docker info", exc)), "", ExitCode.ENGINE)]
    problems = []
    memory = int(info.get("MemTotal", 0)) / GIB
    if memory < MIN_ENGINE_MEMORY_GIB:
        problems.append(
            Problem(
                f"the Docker engine has {memory:.1f} GiB of memory; at least "
                f"{MIN_ENGINE_MEMORY_GIB:.0f} GiB needed",
                "give the VM more memory",
            )
        )
    root = Path(str(info.get("DockerRootDir", "")))
    if root.is_dir():  # only when the engine is local
        problem = disk_problem(root, what="Docker's data directory")
        if problem:
            problems.append(problem)
    return problems


def run(
    *,
    install_root: Path,
    secrets_dir: Path,
    compose: engine.Compose,
    project: str,
    ports: list[int],
    bind_address: str = EVERY_IPV4_ADDRESS,
) -> list[Problem]:
    """Every preflight problem of an install; empty when `up` may go ahead."""
    problems: list[Problem] = []
    client: docker.DockerClient | None = None
    try:
        client = engine.connect()
    except EngineError as exc:
        problems.append(Problem(exc.message, exc.hint or "", ExitCode.ENGINE))
    try:
        engine.compose_version()
    except EngineError as exc:
        problems.append(Problem(exc.message, exc.hint or "", ExitCode.ENGINE))
        compose_config: dict[str, Any] = {}
    else:
        try:
            compose_config = compose.config()
        except EngineError as exc:
            problems.append(Problem(exc.message, "run `orbisctl render`", ExitCode.CONFIG))
            compose_config = {}
    # Without the engine there is no telling whether a port is held by this install's own
    # containers: the engine problem above is the one to fix first, ports are checked then.
    if client is not None:
        others = engine.foreign_installs(client, project, install_root)
        if others:
            problems.append(
                Problem(
                    f"the project name {project} is also used by the install in "
                    f"{', '.join(others)}: `up` would recreate its containers as this one's",
                    "give this install a project name of its own: set project_name in "
                    "orbis.yaml, then `orbisctl render`",
                )
            )
        ours = published_ports(client, project, install_root)
        for port in ports:
            problem = port_problem(port, owned_by_us=ours.__contains__, address=bind_address)
            if problem:
                problems.append(problem)
    disk = disk_problem(install_root, what="the install directory")
    if disk:
        problems.append(disk)
    if client is not None:
        problems.extend(engine_resources(client))
    problems.extend(check_secret_files(secrets_dir, secret_files(compose_config)))
    return problems
