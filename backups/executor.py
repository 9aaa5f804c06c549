"""Where the database and Redis tools run: directly against a server, or inside the stack.

The engine only ever asks an `Executor` for a command line (`pg_dump`, `pg_restore`, `psql`,
`redis-cli`) and streams bytes through its stdin/stdout, so the same engine code serves both:

- `LocalExecutor`: the tools on this host, connected to PostgreSQL/Redis by host and port
  (tests, and installs whose databases live outside the compose stack);
- `ComposeExecutor`: the same tools inside the running stack's containers through
  `docker compose exec -T` (the appliance; nothing is published on the host).

Loading an RDB into a running Redis is the one operation that differs, so each executor
implements `load_redis` itself.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import redis

from orbisctl.core import engine
from orbisctl.core.engine import Compose
from orbisctl.core.errors import DataError, EngineError
from orbisctl.core.secretfiles import POSTGRES_PASSWORD, REDIS_PASSWORD, current_value
from orbisctl.render import MAINTENANCE_FLAG

PG_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
MAINTENANCE_DATABASE = "postgres"


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    @property
    def database(self) -> str:
        """The live database's name (`orbis` in the appliance)."""

    def postgres(self, tool: str, args: Sequence[str], *, dbname: str) -> Command:
        """A PostgreSQL client tool (`pg_dump`, `pg_restore`, `psql`) connected to `dbname`."""

    def redis_cli(self, args: Sequence[str]) -> Command:
        """`redis-cli` connected and authenticated to the live Redis."""

    def load_redis(self, rdb: Path) -> None:
        """Replace the live Redis data set with the one in the RDB file `rdb`."""

    def describe(self) -> str:
        """Where the tools run, for messages (never includes a password)."""


def pg_tool(tool: str) -> str:
    """PostgreSQL 15's own binary: Debian's wrappers pick a version by cluster, not by us."""
    candidate = PG_BIN_DIR / tool
    return str(candidate) if candidate.exists() else tool


@dataclass(frozen=True)
class LocalExecutor:
    """Tools on this host, connected to servers named by URLs (passwords go via env vars)."""

    database_url: str
    redis_url: str

    @property
    def database(self) -> str:
        return unquote(urlsplit(self.database_url).path.lstrip("/")) or "postgres"

    def postgres(self, tool: str, args: Sequence[str], *, dbname: str) -> Command:
        url = urlsplit(self.database_url)
        env = {"PGPASSWORD": unquote(url.password)} if url.password else {}
        argv = [
            pg_tool(tool),
            "--host",
            url.hostname or "127.0.0.1",
            "--port",
            str(url.port or 5432),
            "--username",
            unquote(url.username or "postgres"),
            "--dbname",
            dbname,
            *args,
        ]
        return Command(argv, env)

    def redis_cli(self, args: Sequence[str]) -> Command:
        url = urlsplit(self.redis_url)
        argv = ["redis-cli", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]
        if url.username:
            argv += ["--user", unquote(url.username)]
        env = {"REDISCLI_AUTH": unquote(url.password)} if url.password else {}
        return Command([*argv, *args], env)

    def load_redis(self, rdb: Path) -> None:
        """Copy every key of the RDB into the live server, one atomic MULTI per database.

        A running Redis cannot load an RDB without a restart, so the RDB is opened by a
        scratch `redis-server` on a free loopback port and its keys are moved with
        DUMP/RESTORE (values and TTLs byte-exact).
        """
        target = redis.Redis.from_url(self.redis_url)
        try:
            with _scratch_redis(rdb) as source:
                replace_redis_data(source, target)
        finally:
            target.close()

    def describe(self) -> str:
        db = urlsplit(self.database_url)
        rd = urlsplit(self.redis_url)
        return f"PostgreSQL {db.hostname}:{db.port}/{self.database}, Redis {rd.hostname}:{rd.port}"


def replace_redis_data(source: redis.Redis, target: redis.Redis) -> None:
    """Make every database of `target` hold exactly the keys of `source` (with TTLs)."""
    source_dbs = _databases_with_keys(source)
    target_dbs = _databases_with_keys(target)
    for db in sorted(source_dbs | target_dbs):
        src = _select(source, db)
        dst = _select(target, db)
        try:
            pipe = dst.pipeline(transaction=True)
            pipe.flushdb()
            for key in src.scan_iter(count=1000):
                payload = src.dump(key)
                ttl = src.pttl(key)
                if payload is None:  # expired between SCAN and DUMP
                    continue
                pipe.restore(key, max(int(ttl), 0), payload, replace=True)
            pipe.execute()
        finally:
            dst.close()
            src.close()


def _select(client: redis.Redis, db: int) -> redis.Redis:
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db}
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))


def _databases_with_keys(client: redis.Redis) -> set[int]:
    keyspace = client.info("keyspace")
    return {int(name.removeprefix("db")) for name in keyspace}


@contextlib.contextmanager
def _scratch_redis(rdb: Path, *, timeout: float = 60.0) -> Iterator[redis.Redis]:
    """A private redis-server (unix socket only, no port) that has loaded `rdb`."""
    workdir = Path(tempfile.mkdtemp(prefix="orbis-redis-restore-"))
    socket_path = workdir / "redis.sock"
    try:
        shutil.copyfile(rdb, workdir / "dump.rdb")
        process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                str(socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(workdir),
                "--dbfilename",
                "dump.rdb",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        shutil.rmtree(workdir, ignore_errors=True)
        raise EngineError(
            "redis-server is not installed on this host: it is needed to read the backup's RDB",
            hint="apt-get install redis-server (the service itself can stay disabled)",
        ) from None
    client = redis.Redis(unix_socket_path=str(socket_path))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise DataError("the backup's Redis RDB does not load (corrupted?)")
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"a scratch redis-server did not load the RDB in {timeout}s"
                    ) from None
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


# Redis in the stack persists with AOF, and a Redis with AOF on ignores dump.rdb at start-up.
# An RDB is a valid AOF *base* file, so the restore installs it as a fresh one-file AOF.
_INSTALL_RDB_AS_AOF = """set -eu
cd /data
rm -rf appendonlydir.restoring appendonlydir.replaced
mkdir appendonlydir.restoring
cat > appendonlydir.restoring/appendonly.aof.1.base.rdb
printf 'file appendonly.aof.1.base.rdb seq 1 type b\\n' > appendonlydir.restoring/appendonly.aof.manifest
if [ -d appendonlydir ]; then mv appendonlydir appendonlydir.replaced; fi
mv appendonlydir.restoring appendonlydir
rm -rf appendonlydir.replaced
"""


@dataclass(frozen=True)
class ComposeExecutor:
    """The tools inside the running stack: `docker compose exec -T <service> <tool>`.

    Inside the postgres container the tools connect over the local socket as the `orbis`
    role (the official image trusts local connections). redis-cli gets the password of the
    install's `secrets/redis_password` through an environment variable that `docker compose
    exec --env NAME` copies from ours, so no password crosses the host's process list. Not
    the container's own mounted copy: a running container keeps the file it started with,
    which `rotate-keys --redis-password` makes stale (the old password is then refused).
    """

    compose: Compose
    secrets_dir: Path  # the install's secrets/ on the host
    database_name: str = "orbis"
    db_user: str = "orbis"
    redis_user: str = "orbis"
    # Another server in the postgres container, by its socket directory (a point-in-time
    # restore's scratch server); None: the live one.
    postgres_host: str | None = None

    @property
    def database(self) -> str:
        return self.database_name

    def postgres(self, tool: str, args: Sequence[str], *, dbname: str) -> Command:
        argv = self.compose.exec_command("postgres", [tool, "--username", self.db_user])
        host = ["--host", self.postgres_host] if self.postgres_host else []
        return Command([*argv, *host, "--dbname", dbname, *args])

    def redis_cli(self, args: Sequence[str]) -> Command:
        password = current_value(self.secrets_dir / REDIS_PASSWORD)
        argv = self.compose.exec_command(
            "redis",
            ["redis-cli", "--no-auth-warning", "--user", self.redis_user],
            env_names=["REDISCLI_AUTH"],
        )
        return Command([*argv, *args], {"REDISCLI_AUTH": password})

    def load_redis(self, rdb: Path) -> None:
        """Stop Redis, install the RDB as its AOF base in the volume, start it again."""
        self.compose.run("stop", "redis", timeout=120)
        try:
            with rdb.open("rb") as source:
                result = subprocess.run(
                    self.compose.command(
                        "run",
                        "--rm",
                        "--no-deps",
                        "-T",
                        "--entrypoint",
                        "sh",
                        "redis",
                        "-c",
                        _INSTALL_RDB_AS_AOF,
                    ),
                    stdin=source,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
            if result.returncode != 0:
                raise EngineError(f"installing the Redis data failed: {result.stderr.strip()}")
        finally:
            self.compose.run("start", "redis", timeout=120)
        self._wait_for_redis(timeout=120)

    def _wait_for_redis(self, *, timeout: float) -> None:
        """Until Redis has loaded its data and answers PING (it refuses while loading)."""
        command = self.redis_cli(["ping"])
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(
                command.argv,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={**self.compose.env(), **command.env},
            )
            if result.stdout.strip() == "PONG":
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    f"Redis did not answer within {timeout:.0f} s after the restore",
                    hint="`orbisctl logs redis` shows why",
                )
            time.sleep(0.5)

    def describe(self) -> str:
        return f"compose project {self.compose.project_name}"


# PostgreSQL reads its password file only when it creates its cluster: a restored password
# reaches the running cluster through `before_start` (`ensure_database_login`), not a restart.
# (pgBackRest's secret configuration, in the same container, is read by every command.)
READ_AT_INIT_ONLY = frozenset({("postgres", POSTGRES_PASSWORD)})


def _started_at(container: Any) -> float:
    started = str(container.attrs.get("State", {}).get("StartedAt", ""))
    return datetime.fromisoformat(started).timestamp()


def stale_services(containers: Collection[Any], files: Collection[Path]) -> list[str]:
    """The services with a running container that mounts one of `files` and started before
    that file was written.

    Compose mounts each secret and tls/ file as a bind mount of that one file, and a bind
    mount keeps the file it was made from: an atomically replaced file reaches a container
    only when the container starts again. One started after the file was written (api and
    gateway just started, Redis restarted by the Redis restore) already reads it.
    """
    written = {path.resolve(): path.stat().st_mtime for path in files}
    stale = set()
    for container in containers:
        service = container.labels.get(engine.SERVICE_LABEL, "")
        if container.status != "running":
            continue
        started = _started_at(container)
        for mount in container.attrs.get("Mounts") or []:
            source = Path(str(mount.get("Source", "")))
            mtime = written.get(source)
            if (service, source.name) in READ_AT_INIT_ONLY:
                continue
            if mtime is not None and started < mtime:
                stale.add(service)
    return sorted(stale)


@dataclass(frozen=True)
class ComposeAppControl:
    """Stops and starts the services that write to the database, around a restore's switch,
    and restarts whichever other service still holds an older copy of a restored file
    (nginx its certificate and key, the emulator its accepted Gemini keys and certificate)."""

    compose: Compose
    # The stack's own readiness wait (`orbisctl.stack.wait_healthy`), run after the start.
    wait_ready: Callable[[], object] | None = None
    # Run before the start: `orbisctl.stack.ensure_database_login`, since secrets restored
    # with `--with-secrets` may name a login role or password this cluster does not have.
    before_start: Callable[[], object] | None = None
    services: tuple[str, ...] = ("gateway", "api")

    def stop(self) -> None:
        # From here until api and gateway start again, nginx answers 503 + Retry-After at
        # once instead of holding requests for the stopped api (and then answering 502).
        self._announce_maintenance(True)
        self.compose.run("stop", *self.services, timeout=300)

    def start(self, restored: Collection[Path] = ()) -> None:
        try:
            if self.before_start is not None:
                self.before_start()
            self._start_at_once()
        finally:
            # Until the api answers, nginx finds it refusing connections: 503 all the same.
            self._announce_maintenance(False)
        if restored:
            # After api and gateway are up: nginx resolves their names when it starts.
            stale = stale_services(self._containers(), restored)
            if stale:
                self.compose.run("restart", "--no-deps", *stale, timeout=300)
        if self.wait_ready is not None:
            self.wait_ready()

    def _start_at_once(self) -> None:
        """Start every container of the services together. Compose's `start` honours
        depends_on and would start the gateway only once Docker calls the api healthy, which
        it first checks 10 s after the start; the gateway needs the api only per call."""
        containers = [
            container
            for container in self._containers()
            if container.labels.get(engine.SERVICE_LABEL) in self.services
        ]
        missing = set(self.services) - {c.labels[engine.SERVICE_LABEL] for c in containers}
        if missing:
            raise EngineError(
                f"no container of {', '.join(sorted(missing))} to start",
                hint="`orbisctl up` creates the stack's containers",
            )
        for container in containers:
            engine.start_container(container)

    def _containers(self) -> list[Any]:
        """The stack's containers, stopped ones included (made in this install's directory)."""
        return engine.project_containers(
            engine.connect(),
            self.compose.project_name,
            working_dir=self.compose.project_directory,
        )

    def _announce_maintenance(self, on: bool) -> None:
        """Create or remove nginx's maintenance flag (in its tmpfs). Without a running nginx
        nobody is answered anyway, and a restarted one has no flag: nothing to do then."""
        flag = shlex.quote(MAINTENANCE_FLAG)
        script = f"mkdir -p $(dirname {flag}) && touch {flag}" if on else f"rm -f {flag}"
        with contextlib.suppress(EngineError):
            self.compose.exec("nginx", ["sh", "-c", script], timeout=30)
