"""target: swarm: the install as a Docker Swarm stack (issue 18; docs/swarm.md).

`up` renders `stack.yaml` (the compose template with `swarm` on), whose secrets and configs
are named `<project>_<key>_<hash of the file>`: `docker stack deploy` creates an object once
per content, and a changed file is a new name, so the services that use it roll. The engine
is the one DOCKER_HOST names, which must be a manager. Functions here return data; commands
print it. Verbs that do not run on a swarm yet are refused in one line (`refuse_unless_ready`).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import yaml

from orbisctl.core import engine
from orbisctl.core.config import CONFIG_FILENAME, OrbisConfig, Target
from orbisctl.core.errors import EngineError, UnhealthyError, UserError
from orbisctl.render import STACK_FILE, render_swarm_stack, swarm_objects

NAMESPACE_LABEL = "com.docker.stack.namespace"
# Swarm object names are at most 64 characters: project (cut) + key + 10 hex digits.
_NAME_MAX = 64
_HASH_DIGITS = 10
POLL_SECONDS = 1.0
DEPLOY_TIMEOUT_SECONDS = 120
DATA_SERVICES = ("postgres", "redis")
DATA_VOLUMES = ("postgres_data", "redis_data")
ISSUE = "issue 18"

# Verbs (command paths without `orbisctl`) that work on target swarm; every other verb that
# reads an install directory is refused in one line with exit code 2.
SWARM_VERBS = frozenset({"init", "render", "up", "down", "status"})


def is_swarm(config: OrbisConfig) -> bool:
    return config.target is Target.SWARM


def refuse_unless_ready(verb: str, install_dir: Path) -> None:
    """UserError when `install_dir` is a target-swarm install and `verb` does not run there.

    Reads only orbis.yaml's `target`; a missing or broken file is left for the verb to report.
    """
    if verb in SWARM_VERBS or verb.split(" ", 1)[0] == "images":
        return
    try:
        data = yaml.safe_load((install_dir / CONFIG_FILENAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return
    if isinstance(data, dict) and data.get("target") == Target.SWARM.value:
        raise UserError(
            f"{verb} does not run on target swarm yet ({ISSUE})",
            hint="docs/swarm.md says what works on a swarm today: init, up, status, down",
        )


# ----------------------------------------------------------------------------- stack file


def _name_prefix(project: str) -> str:
    # The longest key (nginx_security_headers, 23) and the hash leave 29 for the project; a
    # longer one is cut and made unique again with a hash of the whole name.
    room = _NAME_MAX - 23 - _HASH_DIGITS - 2
    if len(project) <= room:
        return project
    return f"{project[: room - 5]}-{hashlib.sha256(project.encode()).hexdigest()[:4]}"


def object_names(root: Path, config: OrbisConfig) -> dict[str, str]:
    """{stack file key: versioned swarm name} of every secret and config, from the files."""
    names = {}
    prefix = _name_prefix(config.project_name)
    for key, obj in swarm_objects(config).items():
        path = root / obj.path
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:_HASH_DIGITS]
        except FileNotFoundError:
            raise UserError(
                f"{path} is missing",
                hint="run `orbisctl init` again: it recreates missing secrets and certificates",
            ) from None
        names[key] = f"{prefix}_{key}_{digest}"
    return names


def write_stack_file(root: Path, config: OrbisConfig) -> Path:
    """Render stack.yaml into the install directory; return its path."""
    path = root / STACK_FILE
    text = render_swarm_stack(config, object_names(root, config))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- the swarm


@dataclass(frozen=True)
class Node:
    node_id: str
    hostname: str
    address: str
    role: str
    state: str  # ready, down, ...
    availability: str  # active, pause, drain
    data: bool  # carries swarm.data_node_label=true


def connect_manager() -> docker.DockerClient:
    """The engine DOCKER_HOST names, checked to be an active swarm manager."""
    client = engine.connect()
    try:
        swarm = client.info().get("Swarm") or {}
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error("reading the engine's swarm state", exc) from None
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        state = "not in a swarm" if swarm.get("LocalNodeState") != "active" else "a worker"
        raise EngineError(
            f"the engine at {engine.engine_address()} is {state}: target swarm needs a manager",
            hint="point DOCKER_HOST at a swarm manager (in the lab: `scripts/swarm-lab env 1`)",
        )
    return client


def nodes(client: docker.DockerClient, config: OrbisConfig) -> list[Node]:
    label = config.swarm.data_node_label
    try:
        listed = client.nodes.list()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error("listing the swarm's nodes", exc) from None
    found = []
    for node in listed:
        attrs = node.attrs
        spec, status = attrs.get("Spec", {}), attrs.get("Status", {})
        found.append(
            Node(
                node_id=str(attrs.get("ID", "")),
                hostname=str(attrs.get("Description", {}).get("Hostname", "")),
                address=str(status.get("Addr", "")),
                role=str(spec.get("Role", "")),
                state=str(status.get("State", "")),
                availability=str(spec.get("Availability", "")),
                data=(spec.get("Labels") or {}).get(label) == "true",
            )
        )
    return sorted(found, key=lambda n: n.hostname)


def require_data_node(found: list[Node], config: OrbisConfig) -> Node:
    label = config.swarm.data_node_label
    data = [n for n in found if n.data]
    if not data:
        raise UserError(
            f"no node of the swarm carries the label {label}=true (where postgres and redis run)",
            hint=f"label the data node: `docker node update --label-add {label}=true NODE`",
        )
    if len(data) > 1:
        raise UserError(
            f"{len(data)} nodes carry {label}=true ({', '.join(n.hostname for n in data)}): "
            "postgres and redis keep their volumes on one node",
            hint=f"keep the label on one node: `docker node update --label-rm {label} NODE`",
        )
    return data[0]


# ----------------------------------------------------------------------------- services


@dataclass(frozen=True)
class ServiceState:
    service: str  # the stack's name for it (api, gateway, ...)
    mode: str  # replicated or global
    desired: int
    running: int
    nodes: list[str]  # hostnames of the running tasks
    image: str
    problem: str  # the newest failed task's error, or ""

    @property
    def ready(self) -> bool:
        return self.desired > 0 and self.running >= self.desired

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _services(client: docker.DockerClient, project: str) -> list[Any]:
    try:
        return list(client.services.list(filters={"label": f"{NAMESPACE_LABEL}={project}"}))
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error("listing the stack's services", exc) from None


def _state(service: Any, project: str, hostnames: dict[str, str]) -> ServiceState:
    spec = service.attrs.get("Spec", {})
    mode = "global" if "Global" in spec.get("Mode", {}) else "replicated"
    tasks = service.tasks()
    current = [t for t in tasks if t.get("DesiredState") == "running"]
    running = [t for t in current if t.get("Status", {}).get("State") == "running"]
    if mode == "global":
        desired = len(current)
    else:
        desired = int(spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0))
    problem = ""
    failed = [t for t in tasks if t.get("Status", {}).get("Err")]
    if failed and len(running) < max(desired, 1):
        newest = max(failed, key=lambda t: str(t.get("UpdatedAt", "")))
        problem = str(newest["Status"]["Err"])
    image = str(spec.get("TaskTemplate", {}).get("ContainerSpec", {}).get("Image", ""))
    return ServiceState(
        service=str(spec.get("Name", "")).removeprefix(f"{project}_"),
        mode=mode,
        desired=desired,
        running=len(running),
        nodes=sorted(hostnames.get(str(t.get("NodeID")), "?") for t in running),
        image=image.split("@", 1)[0],
        problem=problem,
    )


def status(
    config: OrbisConfig, client: docker.DockerClient | None = None
) -> tuple[list[ServiceState], list[Node]]:
    client = client or connect_manager()
    found = nodes(client, config)
    hostnames = {n.node_id: n.hostname for n in found}
    project = config.project_name
    try:
        rows = [_state(s, project, hostnames) for s in _services(client, project)]
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error("reading the stack's tasks", exc) from None
    return sorted(rows, key=lambda r: r.service), found


StatusCallback = Callable[[list[ServiceState]], None]
Progress = Callable[[str], None]


def _quiet(_: object) -> None:
    return None


def wait_running(
    config: OrbisConfig,
    client: docker.DockerClient,
    *,
    expected: set[str],
    timeout: float,
    on_status: StatusCallback = _quiet,
) -> list[ServiceState]:
    """Poll until every expected service runs all its replicas (a task with a healthcheck is
    `running` only once healthy); UnhealthyError naming the first that does not."""
    deadline = time.monotonic() + timeout
    while True:
        rows, _ = status(config, client)
        on_status(rows)
        by_name = {r.service: r for r in rows}
        waiting = [by_name.get(name) for name in sorted(expected)]
        if all(row is not None and row.ready for row in waiting):
            return rows
        if time.monotonic() >= deadline:
            missing = sorted(name for name in expected if name not in by_name)
            if missing:
                reason = f"{missing[0]}: no such service in the stack"
            else:
                row = next(r for r in waiting if r is not None and not r.ready)
                detail = f" ({row.problem})" if row.problem else ""
                reason = f"{row.service}: {row.running}/{row.desired} running{detail}"
            raise UnhealthyError(
                f"not running after {timeout:.0f} s: {reason}",
                hint=f"`docker service ps --no-trunc {config.project_name}_SERVICE` shows why",
            )
        time.sleep(POLL_SECONDS)


def _stack_command(*args: str) -> list[str]:
    return [engine.docker_cli(), "stack", *args]


def _run(args: list[str], *, cwd: Path, timeout: float, doing: str) -> str:
    try:
        done = subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise EngineError(f"{doing} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise EngineError(f"{doing} failed: {engine.last_error_line(done.stderr)}")
    return done.stdout + done.stderr


def expected_services(stack_file: Path) -> set[str]:
    data = yaml.safe_load(stack_file.read_text(encoding="utf-8")) or {}
    return set(data.get("services") or {})


def prune_objects(client: docker.DockerClient, project: str, keep: set[str]) -> list[str]:
    """Remove the stack's secrets and configs that are not in `keep` (older versions); one
    still in use by a task being replaced stays, and goes with the next `up`."""
    removed = []
    labelled = {"label": f"{NAMESPACE_LABEL}={project}"}
    try:
        objects = [*client.secrets.list(filters=labelled), *client.configs.list(filters=labelled)]
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error("listing the stack's secrets and configs", exc) from None
    for obj in objects:
        name = str(obj.name)
        if name in keep:
            continue
        try:
            obj.remove()
        except docker.errors.APIError:
            continue  # in use
        removed.append(name)
    return sorted(removed)


@dataclass
class SwarmUp:
    services: list[ServiceState]
    nodes: list[Node]
    urls: dict[str, str]
    stack_file: Path
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)


def up(
    root: Path,
    config: OrbisConfig,
    *,
    timeout: float,
    on_step: Progress = _quiet,
    on_status: StatusCallback = _quiet,
) -> SwarmUp:
    """Render stack.yaml, deploy it, wait until every service runs its replicas."""
    started = time.monotonic()
    client = connect_manager()
    found = nodes(client, config)
    data_node = require_data_node(found, config)
    on_step(f"data node: {data_node.hostname} ({data_node.address})")
    stack_file = write_stack_file(root, config)
    on_step(f"docker stack deploy --compose-file {STACK_FILE} {config.project_name}")
    # --resolve-image never: the images are the nodes' own (loaded or built there); asking a
    # registry for digests would wait on the network and pin digests no registry has.
    _run(
        _stack_command(
            "deploy",
            "--compose-file",
            str(stack_file),
            "--prune",
            "--resolve-image",
            "never",
            config.project_name,
        ),
        cwd=root,
        timeout=DEPLOY_TIMEOUT_SECONDS,
        doing="docker stack deploy",
    )
    deployed = time.monotonic()
    on_step("waiting for every service's replicas to run (healthy)")
    remaining = max(1.0, timeout - (deployed - started))
    rows = wait_running(
        config,
        client,
        expected=expected_services(stack_file),
        timeout=remaining,
        on_status=on_status,
    )
    names = set(object_names(root, config).values())
    pruned = prune_objects(client, config.project_name, names)
    return SwarmUp(
        services=rows,
        nodes=found,
        urls=urls(config, found),
        stack_file=stack_file,
        seconds=time.monotonic() - started,
        timings={
            "deploy_seconds": round(deployed - started, 1),
            "converge_seconds": round(time.monotonic() - deployed, 1),
        },
        pruned=pruned,
    )


def urls(config: OrbisConfig, found: list[Node]) -> dict[str, str]:
    port = "" if config.ports.https == 443 else f":{config.ports.https}"
    base = f"https://{config.domain}{port}"
    shown = {
        "site": f"{base}/",
        "dashboard": f"{base}/dashboard/",
        "widget": f"{base}/widget.js",
        "api": f"{base}/api/v1/",
    }
    # nginx runs on every node (host-mode ports): each node's address serves the site.
    for node in found:
        if node.state == "ready" and node.availability == "active":
            shown[node.hostname] = f"https://{node.address}{port}/"
    return shown


@dataclass(frozen=True)
class SwarmDown:
    removed: bool  # the stack existed
    volumes_removed: list[str]
    # Volumes this engine cannot remove: {node hostname: [volume names]}.
    volumes_elsewhere: dict[str, list[str]]


def _data_task_nodes(client: docker.DockerClient, project: str) -> set[str]:
    """Node ids where postgres or redis tasks ran (their volumes are there)."""
    held = set()
    for service in _services(client, project):
        name = str(service.attrs.get("Spec", {}).get("Name", ""))
        if name.removeprefix(f"{project}_") in DATA_SERVICES:
            held |= {str(t.get("NodeID")) for t in service.tasks() if t.get("NodeID")}
    return held


def _wait_gone(client: docker.DockerClient, project: str, timeout: float) -> None:
    """`docker stack rm` returns before the tasks stop and the networks go."""
    deadline = time.monotonic() + timeout
    labelled = {"label": f"{NAMESPACE_LABEL}={project}"}
    while time.monotonic() < deadline:
        try:
            left = client.services.list(filters=labelled) or client.networks.list(filters=labelled)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error("waiting for the stack to go", exc) from None
        if not left:
            return
        time.sleep(POLL_SECONDS)
    raise EngineError(f"the stack {project} was not gone after {timeout:.0f} s")


def down(root: Path, config: OrbisConfig, *, volumes: bool, timeout: float = 120) -> SwarmDown:
    """Remove the stack (services, networks, its secrets and configs). With `volumes`, also
    the data volumes: removed here when this engine's node holds them, else named per node."""
    client = connect_manager()
    project = config.project_name
    hostnames = {n.node_id: n.hostname for n in nodes(client, config)}
    holders = _data_task_nodes(client, project) if volumes else set()
    existed = bool(_services(client, project))
    if existed:
        _run(_stack_command("rm", project), cwd=root, timeout=timeout, doing="docker stack rm")
        _wait_gone(client, project, timeout)
    removed: list[str] = []
    elsewhere: dict[str, list[str]] = {}
    if volumes:
        names = [f"{project}_{volume}" for volume in DATA_VOLUMES]
        here = str((client.info().get("Swarm") or {}).get("NodeID", ""))
        for node_id in sorted(holders):
            if node_id != here:
                elsewhere[hostnames.get(node_id, node_id)] = names
        removed = _remove_local_volumes(client, names, timeout)
    return SwarmDown(existed, removed, elsewhere)


def _remove_local_volumes(
    client: docker.DockerClient, names: list[str], timeout: float
) -> list[str]:
    removed = []
    for name in names:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.volumes.get(name).remove()
            except docker.errors.NotFound:
                break
            except docker.errors.APIError as exc:
                # In use by a container that is still stopping.
                if time.monotonic() > deadline:
                    raise engine.api_error(f"removing volume {name}", exc) from None
                time.sleep(POLL_SECONDS)
                continue
            except requests.exceptions.RequestException as exc:
                raise engine.api_error(f"removing volume {name}", exc) from None
            removed.append(name)
            break
    return removed
