"""The install's nginx containers: finding them, testing and reloading their config.

Below both the stack lifecycle (`up`, `scale`, certificate renewal) and the rotation's rolling
restarts, which reload nginx whenever the replicas behind it change.
"""

from __future__ import annotations

import time
from typing import Any

import docker
import docker.errors
import requests.exceptions

from orbisctl.core import engine
from orbisctl.core.errors import EngineError, UnhealthyError
from orbisctl.core.install import Install

NGINX_SERVICE = "nginx"
NGINX_RELOAD_TIMEOUT_SECONDS = 30
_RELOAD_POLL_SECONDS = 0.1
# "pid title" of every process in a container (nginx's image has no ps).
_LIST_PROCESSES = (
    'for p in /proc/[0-9]*; do printf "%s " "${p#/proc/}"; tr "\\0" " " < "$p/cmdline"; echo; done'
)


def nginx_test_command(container: Any) -> list[str]:
    """`nginx -t` with the `-g` directives the container runs with (its pid file path: the
    default one is on the read-only root filesystem)."""
    args = list(container.attrs.get("Config", {}).get("Cmd") or [])
    if "-g" in args[:-1]:
        return ["nginx", "-t", "-q", "-g", args[args.index("-g") + 1]]
    return ["nginx", "-t", "-q"]


def _accepting_workers(container: Any) -> set[str]:
    """Pids of the nginx workers that take new connections (an old worker of a reload is
    titled "nginx: worker process is shutting down" and takes none)."""
    listing = engine.exec_in(container, ["sh", "-c", _LIST_PROCESSES])
    workers = set()
    for line in listing.output.splitlines():
        pid, _, title = line.partition(" ")
        if title.startswith("nginx: worker process") and "shutting down" not in title:
            workers.add(pid)
    return workers


def running_nginx(install: Install, client: docker.DockerClient) -> list[Any]:
    """The install's running nginx containers."""
    return [
        c
        for c in install.containers(client)
        if c.labels.get(engine.SERVICE_LABEL) == NGINX_SERVICE and c.status == "running"
    ]


def reload_nginx(install: Install, client: docker.DockerClient) -> int:
    """Test then reload nginx's config in every nginx container, so upstream names are
    re-resolved (nginx 1.22 resolves `server gateway:4001` only at load time); return once
    only workers with the new config take connections.

    SIGHUP returns before the old workers stop accepting: a request in that window would go
    to the old addresses (502 once a restarted api has a new one, or another service's).
    """
    containers = running_nginx(install, client)
    if not containers:
        raise EngineError("nginx is not running", hint="run `orbisctl up`")
    old_workers = {}
    for container in containers:
        test = engine.exec_in(container, nginx_test_command(container))
        if test.exit_code != 0:
            raise EngineError(
                f"nginx config test failed in {container.name}: {test.output.splitlines()[-1]}",
                hint="run `orbisctl render`, then `orbisctl up`",
            )
        old_workers[container.id] = _accepting_workers(container)
        # nginx is the container's main process: SIGHUP is its reload.
        try:
            container.kill(signal="SIGHUP")
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error(f"reloading nginx in {container.name}", exc) from None
    deadline = time.monotonic() + NGINX_RELOAD_TIMEOUT_SECONDS
    for container in containers:
        while True:
            current = _accepting_workers(container)
            if current and not current & old_workers[container.id]:
                break
            if time.monotonic() > deadline:
                raise UnhealthyError(
                    f"nginx in {container.name} did not take its new configuration within "
                    f"{NGINX_RELOAD_TIMEOUT_SECONDS} s",
                    hint="`orbisctl logs nginx` shows why",
                )
            time.sleep(_RELOAD_POLL_SECONDS)
    return len(containers)
