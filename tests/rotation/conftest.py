"""Fixtures for rotation tests: an install directory, local "services" and real data stores.

PostgreSQL roles and Redis ACL users are server-wide, and a rotation changes them: these
tests get their own PostgreSQL and Redis servers (the same real processes as the session
ones, from tests/services.py) so they never change credentials other tests rely on.
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from orbisctl.core.config import OrbisConfig, dump_config
from orbisctl.rotation.direct import DirectPostgresAdmin, DirectRedisAdmin
from orbisctl.rotation.journal import HistoryEntry
from orbisctl.rotation.steps import RotationContext
from orbisctl.rotation.strategies import POSTGRES_OWNER, POSTGRES_USER_FILE, REDIS_USER
from runtime.common.keyring import new_keyring
from tests.services import PostgresServer, RedisServer, postgres_server, redis_server

HEALTH_TIMEOUT_SECONDS = 10.0


def make_install(root: Path, *, config: OrbisConfig | None = None) -> Path:
    """An install directory as `orbisctl init` leaves it: orbis.yaml and every secret."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "orbis.yaml").write_text(dump_config(config or OrbisConfig()))
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(mode=0o700)
    values = {
        "postgres_user": "orbis\n",
        "postgres_password": secrets.token_urlsafe(32) + "\n",
        "redis_password": secrets.token_urlsafe(32) + "\n",
        "jwt_keys.json": new_keyring(now=datetime.now(UTC) - timedelta(days=1)).dumps(),
        "internal_token": secrets.token_urlsafe(32) + "\n",
        "backup_key": base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=") + "\n",
        "gemini_api_key": f"emulator-{secrets.token_urlsafe(32)}\n",
    }
    for name, text in values.items():
        path = secrets_dir / name
        path.write_text(text)
        path.chmod(0o600)
    return root


def secret_values(install: Path) -> list[str]:
    """Every secret value under secrets/ (lines, and JWT key material), for leak checks."""
    found = []
    for path in (install / "secrets").iterdir():
        text = path.read_text()
        if path.name.startswith("jwt_keys.json"):
            found += [line.split('"')[3] for line in text.splitlines() if '"secret"' in line]
        elif path.name.startswith("backup_keys.json"):
            found += [line.split('"')[3] for line in text.splitlines() if '"key"' in line]
        else:
            found += [line.strip() for line in text.splitlines() if line.strip()]
    return found


@dataclass
class LocalService:
    """A stand-in for one service replica: credentials read from secrets/ when it (re)starts,
    and a bounded client loop that opens a NEW connection with them on every iteration."""

    name: str
    connect: Callable[[dict[str, str]], None]
    load: Callable[[], dict[str, str]]
    credentials: dict[str, str] = field(default_factory=dict)
    successes_since_start: int = 0
    successes: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def restart(self) -> None:
        with self._lock:
            self.credentials = self.load()
            self.successes_since_start = 0

    def _loop(self, max_iterations: int, deadline: float) -> None:
        for _ in range(max_iterations):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            with self._lock:
                credentials = dict(self.credentials)
            try:
                self.connect(credentials)
            except Exception as exc:  # noqa: BLE001 - every failure is a finding, kept verbatim
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.successes += 1
                    if credentials == self.credentials:
                        self.successes_since_start += 1

    @contextmanager
    def running(
        self, *, threads: int = 2, max_iterations: int = 5000, seconds: float = 60.0
    ) -> Iterator[LocalService]:
        self.restart()
        deadline = time.monotonic() + seconds
        workers = [
            threading.Thread(target=self._loop, args=(max_iterations, deadline), daemon=True)
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(timeout=15)


class LocalRoller:
    """`ServiceRoller` over LocalServices: restart, then wait until the restarted replica has
    made a few successful new connections with what it loaded (its health check)."""

    def __init__(self, services: dict[str, LocalService] | None = None) -> None:
        self.services = services or {}
        self.calls: list[tuple[str, str]] = []

    def roll(self, service: str) -> None:
        self.calls.append(("roll", service))
        local = self.services.get(service)
        if local is None:
            return
        local.restart()
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while local.successes_since_start < 3:
            if time.monotonic() > deadline:
                raise AssertionError(f"{service} did not become healthy after its restart")
            time.sleep(0.01)

    def reload(self, service: str) -> None:
        self.calls.append(("reload", service))


class RecordingAudit:
    def __init__(self) -> None:
        self.entries: list[HistoryEntry] = []

    def record(self, entry: HistoryEntry) -> None:
        self.entries.append(entry)


class Clock:
    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, delta: timedelta) -> None:
        self.moment += delta


@pytest.fixture
def install(tmp_path: Path) -> Path:
    return make_install(tmp_path / "install")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def roller() -> LocalRoller:
    return LocalRoller()


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def ctx(install: Path, roller: LocalRoller, clock: Clock) -> RotationContext:
    return RotationContext(
        install_dir=install,
        config=OrbisConfig(),
        roller=roller,
        jwt_max_token_lifetime=timedelta(minutes=15),
        now=clock,
    )


# --- real data stores ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rotation_pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def rotation_redis() -> Iterator[RedisServer]:
    """Per test: a rotation leaves the ACL user with a password only this test knows."""
    with redis_server() as server:
        yield server


@pytest.fixture
def pg_install(install: Path, rotation_pg: PostgresServer, ctx: RotationContext) -> Path:
    """The owner role `orbis` logs in with secrets/postgres_password, like a fresh install;
    login roles left by earlier tests are dropped first."""
    password = (install / "secrets" / "postgres_password").read_text().strip()
    with psycopg.connect(rotation_pg.conninfo(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS orbis WITH (FORCE)")
        for role in ("orbis_a", "orbis_b", POSTGRES_OWNER):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
        verifier = conn.pgconn.encrypt_password(
            password.encode(), POSTGRES_OWNER.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            psycopg.sql.SQL("CREATE ROLE orbis LOGIN PASSWORD {}").format(
                psycopg.sql.Literal(verifier)
            )
        )
        conn.execute("CREATE DATABASE orbis OWNER orbis")
    ctx.postgres = DirectPostgresAdmin(
        rotation_pg.host, rotation_pg.port, "orbis", rotation_pg.user, rotation_pg.password
    )
    return install


def pg_credentials(install: Path) -> dict[str, str]:
    """What a restarting API replica reads: the login role (default: the owner) and password."""
    user_file = install / "secrets" / POSTGRES_USER_FILE
    user = user_file.read_text().strip() if user_file.exists() else POSTGRES_OWNER
    return {
        "user": user,
        "password": (install / "secrets" / "postgres_password").read_text().strip(),
    }


@pytest.fixture
def redis_install(install: Path, rotation_redis: RedisServer, ctx: RotationContext) -> Path:
    """secrets/redis_password is the ACL user's only password, as on a fresh install."""
    password = (install / "secrets" / "redis_password").read_text().strip()
    with rotation_redis.client() as admin:
        admin.execute_command("ACL", "SETUSER", REDIS_USER, "resetpass", f">{password}")
    ctx.redis = DirectRedisAdmin(rotation_redis.host, rotation_redis.port)
    return install
