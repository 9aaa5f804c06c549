"""The running stack: bring it up, wait for health, report status, scale, take it down.

Orchestration is `docker compose` (v2) on the rendered compose.yaml; what the containers are
doing is read through the docker SDK. Functions here return data; commands print it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors

from backups import archive_stack
from backups.executor import stale_services
from orbisctl import images, rendered
from orbisctl.core import engine, secretfiles
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import EngineError, UnhealthyError, UserError
from orbisctl.core.install import Install
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.installer import Renewal, complete_archive_secrets, renew_server_cert
from orbisctl.nginx import NGINX_SERVICE, reload_nginx, running_nginx
from orbisctl.render import PGBACKREST_CONFIG, archiving_enabled, image_refs
from orbisctl.rotation.compose import ComposeRoller, ExecPostgresAdmin
from orbisctl.rotation.journal import JournalStore

DEFAULT_UP_TIMEOUT = 300.0
POLL_SECONDS = 1.0
GATEWAY_SERVICE = "gateway"
# Stateless services that may run as several replicas behind nginx.
SCALABLE = (GATEWAY_SERVICE, "api")
POSTGRES_SERVICE = "postgres"
# A container restarted this often is in a loop, not recovering.
RESTART_LOOP_COUNT = 3


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    container: str
    state: str  # running, exited, restarting, created, paused, dead
    health: str  # healthy, unhealthy, starting, or "-" without a healthcheck
    uptime_seconds: int | None
    restarts: int
    image: str
    exit_code: int
    health_detail: str  # what the last health probe printed

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "-")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _parse_time(value: str) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker writes nanoseconds; fromisoformat takes at most microseconds.
    head, _, rest = value.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00")


def container_status(container: Any, now: datetime | None = None) -> ServiceStatus:
    attrs = container.attrs
    state = attrs.get("State", {})
    health = state.get("Health") or {}
    log = health.get("Log") or []
    started = _parse_time(state.get("StartedAt", ""))
    running = state.get("Status") == "running"
    now = now or datetime.now(UTC)
    return ServiceStatus(
        service=container.labels.get(engine.SERVICE_LABEL, container.name),
        container=container.name,
        state=str(state.get("Status", "unknown")),
        health=str(health.get("Status", "-")),
        uptime_seconds=int((now - started).total_seconds()) if running and started else None,
        restarts=int(attrs.get("RestartCount", 0)),
        image=str(attrs.get("Config", {}).get("Image", "")),
        exit_code=int(state.get("ExitCode", 0)),
        # A stopped container's last probe output describes it as it was, not as it is.
        health_detail=str(log[-1].get("Output", "")).strip() if log and running else "",
    )


def status(install: Install, client: docker.DockerClient | None = None) -> list[ServiceStatus]:
    """One row per container of the project (one-shot jobs such as migrate included)."""
    client = client or engine.connect()
    return [container_status(c) for c in install.containers(client)]


def checked_status(container: Any) -> ServiceStatus:
    """`container_status`, with a container that Docker still calls "starting" checked now
    by its own HEALTHCHECK command: Docker runs the first check one interval (10 s) after
    the start (engines before 25 have no start_interval), long after the service is ready."""
    row = container_status(container)
    if row.state != "running" or row.health != "starting":
        return row
    try:
        probe = engine.run_healthcheck(container)
    except EngineError:
        return row  # it stopped or restarted since the listing: the next poll says
    if probe is None or probe.exit_code != 0:
        return row
    return replace(row, health="healthy", health_detail=probe.output)


@dataclass(frozen=True)
class ComposeModel:
    """What the rendered compose file declares, as `docker compose config` resolves it."""

    services: dict[str, dict[str, Any]]

    @property
    def one_shot(self) -> set[str]:
        """Services others wait on to *complete* (migrations), not to be healthy."""
        jobs = set()
        for spec in self.services.values():
            for name, dep in (spec.get("depends_on") or {}).items():
                if dep.get("condition") == "service_completed_successfully":
                    jobs.add(name)
        return jobs

    @property
    def long_running(self) -> list[str]:
        return sorted(set(self.services) - self.one_shot)


def compose_model(compose: engine.Compose) -> ComposeModel:
    return ComposeModel(dict(compose.config().get("services") or {}))


@dataclass(frozen=True)
class NotReady:
    reason: str
    final: bool  # waiting longer cannot help (a migration failed)


def not_ready(statuses: list[ServiceStatus], model: ComposeModel) -> NotReady | None:
    """Why the stack is not ready yet, or None when every service is ready."""
    by_service: dict[str, list[ServiceStatus]] = {}
    for row in statuses:
        by_service.setdefault(row.service, []).append(row)
    for job in sorted(model.one_shot):
        for row in by_service.get(job, []):
            if row.state == "exited" and row.exit_code != 0:
                return NotReady(f"{job} exited with code {row.exit_code}", final=True)
    for service in model.long_running:
        rows = by_service.get(service, [])
        if not rows:
            return NotReady(f"{service}: no container yet", final=False)
        for row in rows:
            if not row.ready:
                detail = f" ({row.health_detail.splitlines()[-1]})" if row.health_detail else ""
                return NotReady(f"{service}: {row.state}, {row.health}{detail}", final=False)
    return None


StatusCallback = Callable[[list[ServiceStatus]], None]


def _ignore(_: list[ServiceStatus]) -> None:
    return None


def _stop(process: subprocess.Popen[str] | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.communicate()


def wait_healthy(
    install: Install,
    model: ComposeModel,
    *,
    timeout: float,
    client: docker.DockerClient,
    on_status: StatusCallback = _ignore,
    running: subprocess.Popen[str] | None = None,
    check_now: bool = False,
) -> list[ServiceStatus]:
    """Poll until every long-running service is ready; UnhealthyError after `timeout` seconds.

    `running` is a compose process still working (`up`): its failure ends the wait at once.
    `check_now` runs the health check of a container Docker still calls "starting" (the
    restore's short window); without it ready means what `status` shows, Docker's verdict.
    """
    row_of = checked_status if check_now else container_status
    deadline = time.monotonic() + timeout
    while True:
        statuses = [row_of(c) for c in install.containers(client)]
        on_status(statuses)
        problem = not_ready(statuses, model)
        if running is not None and running.poll() is not None:
            _, stderr = running.communicate()
            if running.returncode != 0 and not (problem and problem.final):
                reason = engine.last_error_line(stderr)
                # A dependency that never became healthy is the stack's health, not the engine's.
                error = UnhealthyError if "unhealthy" in reason else EngineError
                raise error(
                    f"docker compose up failed: {reason}",
                    hint="`orbisctl doctor` says why; `orbisctl logs SERVICE` shows what it printed",
                )
            running = None
        if problem is None and running is None:
            return statuses
        # While compose runs, an exited job may be last run's container, about to be replaced.
        if problem is not None and problem.final and running is None:
            job = problem.reason.split(" ", 1)[0]
            raise UnhealthyError(problem.reason, hint=f"`orbisctl logs {job}` shows why")
        if time.monotonic() >= deadline:
            _stop(running)
            reason = problem.reason if problem else "docker compose up is still running"
            raise UnhealthyError(
                f"not healthy after {timeout:.0f} s: {reason}",
                hint="`orbisctl doctor` says why; `orbisctl logs SERVICE` shows what it printed",
            )
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class UpResult:
    statuses: list[ServiceStatus]
    urls: dict[str, str]
    built: bool
    seconds: float
    # The server certificate: renewed by this `up` or not, and until when it is valid.
    certificate: Renewal | None = None
    # How rendered files reached the services reading them ("nginx reloaded: ... changed").
    refreshed: list[str] = field(default_factory=list)


def urls(config: OrbisConfig) -> dict[str, str]:
    port = "" if config.ports.https == 443 else f":{config.ports.https}"
    base = f"https://{config.domain}{port}"
    return {
        "site": f"{base}/",
        "dashboard": f"{base}/dashboard/",
        "widget": f"{base}/widget.js",
        "api": f"{base}/api/v1/",
        "api docs": f"{base}/api/v1/docs",
    }


def up(
    install: Install,
    *,
    timeout: float = DEFAULT_UP_TIMEOUT,
    build: bool = False,
    progress: Progress = NO_PROGRESS,
    on_status: StatusCallback = _ignore,
) -> UpResult:
    """Build or load images as needed, run migrations, start everything, wait for health.

    Idempotent: `docker compose up` recreates only containers whose definition changed.
    """
    started = time.monotonic()
    client = engine.connect()
    compose = install.compose()
    model = compose_model(compose)
    # Before compose starts nginx (a new one reads the new certificate); a running one takes
    # it at the reload below, which must happen whenever `certificate.renewed`.
    certificate = renew_server_cert(install.root)
    for created in complete_archive_secrets(install.root):
        progress.note(f"created {created} (continuous archiving)")
    if certificate.renewed:
        progress.note(f"server certificate renewed, valid until {certificate.expires:%Y-%m-%d}")
    wanted = image_refs(install.config)
    missing = images.missing_images(client, wanted)
    if build or missing:
        if missing:
            progress.note(f"images missing: {', '.join(missing)}")
        images.build_all(install.config, progress=progress)
    if POSTGRES_SERVICE in model.services:
        start_postgres(
            install, client, timeout=max(1.0, timeout - (time.monotonic() - started)),
            progress=progress,
        )  # fmt: skip
    nginx_before = {c.id for c in running_nginx(install, client)}
    progress.step("docker compose up (migrations run first), wait until all is healthy")
    process = subprocess.Popen(
        compose.command("up", "--detach", "--remove-orphans"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=compose.env(),
    )
    remaining = max(1.0, timeout - (time.monotonic() - started))
    statuses = wait_healthy(
        install, model, timeout=remaining, client=client, on_status=on_status, running=process
    )
    refreshed = _refresh_rendered(
        install,
        model,
        client,
        nginx_before=nginx_before,
        timeout=max(1.0, timeout - (time.monotonic() - started)),
        progress=progress,
    )
    # Compose may have recreated api or gateway containers (new addresses) without touching
    # nginx, which resolved their names when it loaded its config: have it resolve them again.
    # The reload is also what has a kept nginx take re-rendered files.
    progress.step("nginx: config test and reload")
    reload_nginx(install, client)
    rendered.save_state(install.root, {NGINX_SERVICE: rendered.digests(install.root)})
    statuses = status(install, client)
    return UpResult(
        statuses,
        urls(install.config),
        bool(build or missing),
        time.monotonic() - started,
        certificate,
        refreshed,
    )


def start_postgres(
    install: Install, client: docker.DockerClient, *, timeout: float, progress: Progress
) -> None:
    """Start (or recreate, when its definition changed) postgres, give the login role its
    password, and have pgBackRest's stanza ready: before migrate and api first connect."""
    compose = install.compose()
    progress.step("postgres: start, then give the login role in secrets/ its password")
    compose.run("up", "--detach", "--wait", POSTGRES_SERVICE, timeout=timeout)
    if ensure_database_login(install, client) is None:
        progress.note("a rotation is in progress: its --resume or --abort sets the login roles")
    # Not before `render` gave an older install its pgBackRest files.
    if archiving_enabled(install.config) and (install.root / PGBACKREST_CONFIG).is_file():
        secret = install.secrets_dir / secretfiles.PGBACKREST_SECRET_CONFIG
        if stale_services(install.containers(client), [secret]):
            # Rewritten (backup.remote added, its keys changed): a bind mount keeps the
            # file it was made from until the container starts again.
            progress.step("postgres: restart for pgBackRest's new secret configuration")
            compose.run("restart", POSTGRES_SERVICE, timeout=timeout)
            compose.run("up", "--detach", "--wait", POSTGRES_SERVICE, timeout=timeout)
        progress.step("pgBackRest: create or check the stanza (continuous archiving)")
        archive_stack.ensure_stanza(install)


def _refresh_rendered(
    install: Install,
    model: ComposeModel,
    client: docker.DockerClient,
    *,
    nginx_before: set[str],
    timeout: float,
    progress: Progress,
) -> list[str]:
    """Bring re-rendered nginx files to nginx (issue 15 item 10: `render` + `up` left nginx
    on its old config); say what was done. A kept nginx (compose did not recreate it) reloads,
    after up; one that cannot see the files on disk is recreated first."""
    current = running_nginx(install, client)
    kept = [c for c in current if c.id in nginx_before]
    if nginx_before and current and not kept:
        return ["nginx recreated by compose (its definition in compose.yaml changed)"]
    if not kept:
        return []
    blind = rendered.blind_containers(install.root, kept)
    if blind:
        files = ", ".join(sorted({item.file for item in blind}))
        progress.step(f"nginx: recreate (it does not see the rendered {files})")
        install.compose().run(
            "up", "--detach", "--no-deps", "--force-recreate", NGINX_SERVICE, timeout=timeout
        )
        wait_healthy(install, model, timeout=timeout, client=client)
        return [f"nginx recreated: it did not see the rendered {files} (a reload cannot help)"]
    changed = rendered.changed_since_loaded(install.root)
    if changed is None:
        return ["nginx reloaded: it now reads the rendered files on disk"]
    if changed:
        return [f"nginx reloaded: {', '.join(changed)} changed"]
    return []


def ensure_database_login(install: Install, client: docker.DockerClient) -> str | None:
    """Make the role `secrets/postgres_user` names log in with `secrets/postgres_password`, in
    the running postgres container, the way `rotate-keys` makes it; return that role.

    Roles live in the cluster, not in a dump nor in secrets/. A fresh cluster (a new host's
    after `restore --secrets-only`, a drill's scratch one) holds only the owner, which the
    image made from the password file, but after `rotate-keys --db-password` the services log
    in as `orbis_a`/`orbis_b`; and `restore --with-secrets`, or secrets restored over an
    existing cluster, bring a password the cluster has never seen. Idempotent. Skipped (None)
    while a rotation journal exists: `rotate-keys --resume/--abort` owns the roles then, and
    a rotation killed between writing the role and its password must not have that half
    written pair made real.
    """
    if JournalStore.of_install(install.root).journal_path.is_file():
        return None
    role_file = install.secrets_dir / secretfiles.POSTGRES_USER
    role = role_file.read_text().strip() if role_file.is_file() else ""
    role = role or secretfiles.POSTGRES_OWNER_ROLE
    password = secretfiles.current_value(install.secrets_dir / secretfiles.POSTGRES_PASSWORD)
    admin = ExecPostgresAdmin(ComposeRoller(install, client))
    admin.enable_login(role, password, owner=secretfiles.POSTGRES_OWNER_ROLE)
    return role


PROJECT_CLASH_FIX = (
    "give this install a project name of its own: set project_name in orbis.yaml (for an "
    "install that has run, only after `orbisctl down` there), then `orbisctl render`"
)


def check_project_is_ours(install: Install, client: docker.DockerClient) -> None:
    """UserError when containers of another install use this install's project name:
    `docker compose up/down` would recreate or remove them as this project's own."""
    others = engine.foreign_installs(client, install.config.project_name, install.root)
    if others:
        raise UserError(
            f"the project name {install.config.project_name} is also used by the install in "
            f"{', '.join(others)}; docker compose would act on its containers as well",
            hint=PROJECT_CLASH_FIX,
        )


def down(install: Install, *, volumes: bool) -> None:
    compose = install.compose()
    # engine.connect(): the same one-line error as every other verb when the engine is away.
    check_project_is_ours(install, engine.connect())
    args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
    compose.run(*args, timeout=300)


def logs(install: Install, *, services: list[str], follow: bool, tail: int | None) -> int:
    args = ["logs", "--no-color"]
    if follow:
        args.append("--follow")
    if tail is not None:
        args += ["--tail", str(tail)]
    compose = install.compose()
    if services:  # read from the rendered file: a typo is named even with the engine down
        known = compose_model(compose).services
        unknown = [name for name in services if name not in known]
        if unknown:
            raise UserError(
                f"no service {', '.join(map(repr, unknown))} in this install",
                hint=f"its services: {', '.join(sorted(known))}",
            )
    check_project_is_ours(install, engine.connect())
    return compose.stream(*args, *services)


def parse_scale(spec: str) -> tuple[str, int]:
    service, sep, count = spec.partition("=")
    if not sep or not count.isdigit():
        raise UserError(f"{spec!r} is not SERVICE=N", hint="for example: orbisctl scale gateway=3")
    if service not in SCALABLE:
        raise UserError(
            f"{service!r} cannot be scaled", hint=f"scalable services: {', '.join(SCALABLE)}"
        )
    replicas = int(count)
    if not 1 <= replicas <= 64:
        raise UserError(f"{replicas} replicas is out of range", hint="use 1 to 64")
    return service, replicas


def scale(
    install: Install,
    service: str,
    replicas: int,
    *,
    timeout: float = DEFAULT_UP_TIMEOUT,
    progress: Progress = NO_PROGRESS,
    on_status: StatusCallback = _ignore,
) -> list[ServiceStatus]:
    """Run `replicas` containers of a stateless service, wait for health, reload nginx."""
    client = engine.connect()
    check_project_is_ours(install, client)
    compose = install.compose()
    model = compose_model(compose)
    if service not in model.services:
        raise UserError(f"the stack has no {service!r} service", hint="run `orbisctl render`")
    progress.step(f"docker compose up --scale {service}={replicas}")
    compose.scale(service, replicas, timeout=timeout)
    progress.step("wait until every service is healthy")
    statuses = wait_healthy(install, model, timeout=timeout, client=client, on_status=on_status)
    progress.step("nginx: config test and reload")
    reload_nginx(install, client)
    return [row for row in statuses if row.service == service]


def renew_certificate(install: Install, *, force: bool = False) -> tuple[Renewal, int]:
    """`tls renew`: renew the server certificate when due (see `renew_server_cert`) and have
    every running nginx take it with a reload, which keeps open calls (old workers serve their
    WebSocket tunnels until they close); return the renewal and how many nginx reloaded.

    With the engine or nginx down, the certificate is written all the same: nginx reads it
    when it starts.
    """
    renewal = renew_server_cert(install.root, force=force)
    if not renewal.renewed:
        return renewal, 0
    try:
        client = engine.connect()
    except EngineError:
        return renewal, 0
    if not running_nginx(install, client):
        return renewal, 0
    return renewal, reload_nginx(install, client)
