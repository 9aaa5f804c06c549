"""`ServiceRoller` for the Compose stack: surge one new replica, wait for health, retire one.

A replica re-reads its secret files only when its container starts (Compose bind-mounts each
secret file, and a bind mount keeps pointing at the file it was made from, so an atomically
replaced secret is invisible to running containers). So a roll replaces containers:

    for each old replica:  scale up by one (the new container mounts the new files)
                           → wait until it is healthy → nginx reloads (routes to it)
                           → stop the old one (SIGTERM: the gateway drains, the api finishes
                             its requests) → remove it → nginx reloads (forgets it)

The service never has fewer healthy replicas than before the roll.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from orbisctl import engine
from orbisctl import stack as stack_core
from orbisctl.errors import UnhealthyError

POLL_SECONDS = 0.5
# Time a stopping replica gets beyond the gateway's own drain timeout before SIGKILL.
STOP_GRACE_SECONDS = 15
# Services nginx proxies to: it resolves their names only when (re)loaded.
ROUTED_SERVICES = frozenset({"api", "gateway"})


@dataclass
class ComposeRoller:
    install: stack_core.Install
    client: docker.DockerClient
    health_timeout: float = 180.0

    def running(self, service: str) -> list[Any]:
        """The running containers of `service`."""
        return [
            container
            for container in engine.project_containers(
                self.client, self.install.config.project_name
            )
            if container.labels.get(engine.SERVICE_LABEL) == service
            and container.status == "running"
        ]

    def _stop_timeout(self, service: str) -> int:
        if service == "gateway":
            return self.install.config.gateway.drain_timeout_seconds + STOP_GRACE_SECONDS
        return STOP_GRACE_SECONDS

    def _wait_healthy(self, container: Any, service: str) -> None:
        deadline = time.monotonic() + self.health_timeout
        while True:
            try:
                container.reload()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise engine.api_error(f"inspecting {container.name}", exc) from None
            state = container.attrs.get("State", {})
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy" or (health is None and state.get("Running")):
                return
            if not state.get("Running") or health == "unhealthy":
                raise UnhealthyError(
                    f"the new {service} replica {container.name} is {health or state.get('Status')}",
                    hint=f"`orbisctl logs {service}` shows why; then `orbisctl rotate-keys "
                    "--resume` or --abort",
                )
            if time.monotonic() > deadline:
                raise UnhealthyError(
                    f"the new {service} replica {container.name} was not healthy within "
                    f"{self.health_timeout:.0f} s",
                    hint=f"`orbisctl logs {service}` shows why",
                )
            time.sleep(POLL_SECONDS)

    def _reload_routes(self, service: str) -> None:
        if service in ROUTED_SERVICES and self.running(stack_core.NGINX_SERVICE):
            stack_core.reload_nginx(self.install, self.client)

    def roll(self, service: str) -> None:
        old = self.running(service)
        compose = self.install.compose()
        for container in old:
            known = {item.id for item in self.running(service)}
            compose.run(
                "up",
                "--detach",
                "--no-deps",
                "--no-recreate",
                "--scale",
                f"{service}={len(known) + 1}",
                service,
                timeout=self.health_timeout,
            )
            fresh = [item for item in self.running(service) if item.id not in known]
            for item in fresh:
                self._wait_healthy(item, service)
            self._reload_routes(service)
            try:
                container.stop(timeout=self._stop_timeout(service))
                container.remove()
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                raise engine.api_error(f"retiring {container.name}", exc) from None
            self._reload_routes(service)

    def reload(self, service: str) -> None:
        # The emulator re-reads its keys file on change, but a running container never sees a
        # replaced secret file (see the module docstring): only a new container does.
        self.roll(service)
