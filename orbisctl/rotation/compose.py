"""The rotation ports for the Compose stack: rolling restarts and in-container administration.

`ComposeRoller` (`ServiceRoller`): surge one new replica, wait for health, retire one.

A replica re-reads its secret files only when its container starts (Compose bind-mounts each
secret file, and a bind mount keeps pointing at the file it was made from, so an atomically
replaced secret is invisible to running containers). So a roll replaces containers:

    for each old replica:  scale up by one (the new container mounts the new files)
                           → wait until it is healthy → nginx reloads (routes to it)
                           → SIGTERM the old one (the gateway moves its calls, the api
                             answers with `Connection: close` for a few seconds, then stops
                             listening) → nginx reloads meanwhile (its old workers close their
                             pooled connections to it) → wait until it has stopped → remove it
                             → nginx reloads (forgets it)

The service never has fewer healthy replicas than before the roll.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions

from orbisctl import nginx
from orbisctl.core import engine
from orbisctl.core.errors import EngineError, UnhealthyError
from orbisctl.core.install import Install
from orbisctl.rotation.direct import scram_sha256_verifier
from orbisctl.rotation.journal import HistoryEntry

POLL_SECONDS = 0.5
# Time a stopping replica gets beyond the gateway's own drain timeout before SIGKILL.
STOP_GRACE_SECONDS = 15
# Services nginx proxies to: it resolves their names only when (re)loaded.
ROUTED_SERVICES = frozenset({"api", "gateway"})


@dataclass
class ComposeRoller:
    install: Install
    client: docker.DockerClient
    health_timeout: float = 180.0

    def running(self, service: str) -> list[Any]:
        """The running containers of `service`."""
        return [
            container
            for container in engine.project_containers(
                self.client, self.install.config.project_name, working_dir=self.install.root
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
        """Reload nginx so its upstream list names the current replicas; `reload_nginx`
        returns only once the old workers stop accepting, so a replica stopped after this
        gets no new requests."""
        if service in ROUTED_SERVICES and self.running(nginx.NGINX_SERVICE):
            nginx.reload_nginx(self.install, self.client)

    def roll(
        self,
        service: str,
        *,
        outdated: Callable[[Any], bool] | None = None,
        replicas: int | None = None,
    ) -> None:
        """Replace the running replicas of `service` one at a time, or only those `outdated`
        picks. With `replicas` (the count before the roll began), a roll cut short after a
        surge, which left one replica more, retires an outdated one before surging again."""
        running = self.running(service)
        old = [item for item in running if outdated(item)] if outdated else running
        old_ids = {item.id for item in old}
        compose = self.install.compose()
        for container in old:
            current = self.running(service)
            if replicas is not None and len(current) > replicas:
                fresh = [item for item in current if item.id not in old_ids]
            else:
                known = {item.id for item in current}
                compose.scale(service, len(known) + 1, timeout=self.health_timeout)
                fresh = [item for item in self.running(service) if item.id not in known]
            for item in fresh:
                self._wait_healthy(item, service)
            self._reload_routes(service)
            self._retire(container, service)
            self._reload_routes(service)

    def _retire(self, container: Any, service: str) -> None:
        """Stop and remove an old replica, with nginx reloaded while it drains: the reload's
        old workers close their idle keep-alive connections to it themselves. Left to the
        replica, they would be closed when it stops listening, racing a request nginx sends on
        one (nginx does not retry a POST: 502). The new workers' requests to the draining api
        are answered with `Connection: close`, so none of theirs stay pooled."""
        try:
            container.kill(signal="SIGTERM")
            self._reload_routes(service)
            # SIGTERM again, then SIGKILL once the timeout is over.
            container.stop(timeout=self._stop_timeout(service))
            container.remove()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error(f"retiring {container.name}", exc) from None

    def reload(self, service: str) -> None:
        # The emulator re-reads its keys file on change, but a running container never sees a
        # replaced secret file (see the module docstring): only a new container does.
        self.roll(service)


# --- data stores and the model endpoint, reached inside their containers ----------------------

_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_VERIFIER = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")
_SECRET_TEXT = re.compile(r"^[A-Za-z0-9_.~+/=-]+$")


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"refusing to pass a malformed {what} to a shell-less command")
    return value


@dataclass
class _ServiceContainer:
    roller: ComposeRoller
    service: str

    def one(self) -> Any:
        running = self.roller.running(self.service)
        if not running:
            raise EngineError(f"{self.service} is not running", hint="run `orbisctl up` first")
        return running[0]


@dataclass
class ExecPostgresAdmin:
    """`PostgresAdmin` through `psql` in the postgres container: the owner over the local
    socket (trust inside the container) for administration, TCP + password for login checks."""

    roller: ComposeRoller
    dbname: str = "orbis"
    admin_user: str = "orbis"

    def _psql(self, sql: str, *, user: str, password: str | None = None) -> engine.ExecResult:
        container = _ServiceContainer(self.roller, "postgres").one()
        command = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dbname, "-U", user]
        environment = {}
        if password is not None:
            command += ["-h", "127.0.0.1"]
            environment["PGPASSWORD"] = password
        return engine.exec_in(container, [*command, "-c", sql], environment)

    def _admin(self, sql: str) -> None:
        result = self._psql(sql, user=self.admin_user)
        if result.exit_code != 0:
            raise EngineError(f"psql in the postgres container failed: {result.output[-300:]}")

    def enable_login(self, role: str, password: str, *, owner: str) -> None:
        name = _checked(role, _ROLE, "role name")
        owner_name = _checked(owner, _ROLE, "role name")
        verifier = _checked(scram_sha256_verifier(password), _VERIFIER, "verifier")
        # psql -c has no bind parameters; every interpolated part was checked by _checked.
        statements = [
            (
                f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') "  # noqa: S608
                f"THEN CREATE ROLE {name}; END IF; END $$;"
            ),
            f"ALTER ROLE {name} LOGIN PASSWORD '{verifier}';",
        ]
        if name != owner_name:
            statements += [
                f"GRANT {owner_name} TO {name};",
                f"ALTER ROLE {name} SET role = '{owner_name}';",
            ]
        self._admin(" ".join(statements))

    def disable_login(self, role: str, *, owner: str) -> None:
        name = _checked(role, _ROLE, "role name")
        change = "PASSWORD NULL" if name == owner else "NOLOGIN PASSWORD NULL"
        self._admin(
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') "  # noqa: S608 - checked name
            f"THEN ALTER ROLE {name} {change}; END IF; END $$;"
        )

    def can_login(self, role: str, password: str) -> bool:
        result = self._psql("SELECT 1", user=_checked(role, _ROLE, "role name"), password=password)
        if result.exit_code == 0:
            return True
        if "authentication failed" in result.output or "not permitted to log in" in result.output:
            return False
        raise EngineError(f"cannot check a PostgreSQL login: {result.output[-300:]}")


@dataclass
class ExecRedisAdmin:
    """`RedisAdmin` through `redis-cli` in the redis container (REDISCLI_AUTH carries the
    authenticating password; an ACL rule carries the changed one, as Redis requires)."""

    roller: ComposeRoller

    def _cli(self, user: str, auth: str, *args: str) -> engine.ExecResult:
        container = _ServiceContainer(self.roller, "redis").one()
        return engine.exec_in(
            container,
            ["redis-cli", "--no-auth-warning", "--user", user, *args],
            {"REDISCLI_AUTH": auth},
        )

    def _setuser(self, user: str, rule: str, *, auth: str) -> None:
        result = self._cli(user, auth, "ACL", "SETUSER", user, rule)
        if result.output != "OK":
            raise EngineError(f"Redis refused an ACL change for {user}: {result.output[:200]}")

    def add_password(self, user: str, password: str, *, auth: str) -> None:
        self._setuser(user, ">" + _checked(password, _SECRET_TEXT, "password"), auth=auth)

    def remove_password(self, user: str, password: str, *, auth: str) -> None:
        # Removing a password the user does not have is an error in Redis.
        if self.can_auth(user, password):
            self._setuser(user, "<" + _checked(password, _SECRET_TEXT, "password"), auth=auth)

    def can_auth(self, user: str, password: str) -> bool:
        return self._cli(user, password, "PING").output == "PONG"


@dataclass
class ExecGeminiProbe:
    """`GeminiProbe` run in a gateway container with the gateway's endpoint settings."""

    roller: ComposeRoller

    def check(self, api_key: str) -> str | None:
        # In the gateway container: the gateway's own SDK, trust store, endpoint settings and
        # network path (runtime/gateway/keyprobe.py).
        container = _ServiceContainer(self.roller, "gateway").one()
        result = engine.exec_in(
            container,
            ["python", "-m", "runtime.gateway", "probe-key"],
            {"ORBIS_PROBE_GEMINI_KEY": api_key},
        )
        last = result.output.splitlines()[-1] if result.output else ""
        if last == "accepted":
            return None
        if last.startswith("refused: "):
            return last.removeprefix("refused: ")
        return f"the probe failed (exit {result.exit_code}): {last[-200:]}"


AUDIT_ACTION = "secret.rotate"


@dataclass
class ExecApiAudit:
    """`AuditSink` through the API's `POST /internal/audit`, asked inside an api container
    (the API is not published, and /internal is never proxied by nginx): one entry per
    rotated kind in the `system` audit chain, with who, when and the outcome, never a value."""

    roller: ComposeRoller

    def record(self, entry: HistoryEntry) -> None:
        container = _ServiceContainer(self.roller, "api").one()
        for kind in entry.kinds:
            body = {
                "action": AUDIT_ACTION,
                "actor": entry.actor,
                "detail": {
                    "kind": kind,
                    "rotation_id": entry.id,
                    "outcome": entry.outcome,
                    "started_at": entry.started_at,
                    "finished_at": entry.finished_at,
                },
            }
            # runtime/api/audit_post.py: the token that very container accepts, never sent out.
            result = engine.exec_in(
                container,
                ["python", "-m", "runtime.api", "post-audit"],
                {"ORBIS_AUDIT_BODY": json.dumps(body)},
            )
            if result.output.splitlines()[-1:] != ["204"]:
                raise EngineError(
                    f"the api did not record the audit entry of rotation {entry.id} "
                    f"({result.output[-200:] or f'exit {result.exit_code}'})",
                    hint="check `orbisctl status` and `orbisctl logs api`, then "
                    "`orbisctl rotate-keys --resume` writes it",
                )


# --- what the rendered stack must offer for each rotation -------------------------------------


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).split("=", 1) for item in raw if "=" in str(item))
    return {str(key): str(value) for key, value in raw.items()}


def unsupported(model: dict[str, Any], kinds: list[str]) -> list[str]:
    """Why the rendered compose model (`docker compose config`) cannot rotate some `kinds`
    without breaking a service; empty when it can."""
    services: dict[str, Any] = model.get("services") or {}
    problems = []
    api = services.get("api")
    if (
        "postgres_password" in kinds
        and api is not None
        and "ORBIS_DATABASE_USER_FILE" not in _environment(api)
    ):
        problems.append(
            "the api takes its database user from ORBIS_DATABASE_URL only, so it cannot "
            "follow the alternating login roles (it needs ORBIS_DATABASE_USER_FILE, "
            "docs/operations.md)"
        )
    redis = services.get("redis")
    if "redis_password" in kinds and redis is not None:
        test = " ".join(str(part) for part in (redis.get("healthcheck") or {}).get("test") or [])
        if "/run/secrets/redis_password" in test:
            problems.append(
                "the redis healthcheck authenticates with the password the container started "
                "with; once the old password is removed, redis would turn unhealthy"
            )
    return problems
