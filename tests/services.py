"""Real PostgreSQL and Redis server processes on free loopback ports, for tests.

These are the real servers from Debian's packages (PostgreSQL 15 via initdb/pg_ctl, Redis 7),
started per test session; nothing is mocked. PostgreSQL refuses to run as root, so when the
tests run as root the cluster belongs to the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

PG_BIN = Path(os.environ.get("ORBIS_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def as_postgres_user() -> tuple[str, ...]:
    """Command prefix that runs a PostgreSQL binary as `postgres` (PostgreSQL refuses root)."""
    return ("runuser", "-u", "postgres", "--") if os.geteuid() == 0 else ()


def stop_cluster(data_dir: Path) -> None:
    """`pg_ctl stop -m fast` of the cluster in `data_dir`, if it runs."""
    subprocess.run(
        [
            *as_postgres_user(),
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data_dir),
            "-m",
            "fast",
            "-w",
            "stop",
        ],
        check=False,
        capture_output=True,
    )


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    data_dir: Path

    def conninfo(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user or self.user,
            password=password or self.password,
        )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"test_{secrets.token_hex(6)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        stop_cluster(self.data_dir)

    def start(self) -> None:
        subprocess.run(
            [
                *as_postgres_user(),
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "-t",
                "30",
                "start",
            ],
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def postgres_server(
    *, extra_conf: str = "", initdb_args: tuple[str, ...] = ()
) -> Iterator[PostgresServer]:
    """A fresh cluster; `extra_conf` is appended to its postgresql.conf (e.g. archiving)."""
    base = Path(tempfile.mkdtemp(prefix="orbis-pg-"))
    data_dir = base / "data"
    password = secrets.token_urlsafe(16)
    pwfile = base / "pwfile"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(base, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    port = free_port()
    subprocess.run(
        [
            *as_postgres_user(),
            str(PG_BIN / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            *initdb_args,
        ],
        check=True,
        capture_output=True,
    )
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{base}'\nfsync = off\nsynchronous_commit = off\n"
            "full_page_writes = off\nmax_connections = 200\n"
        )
        conf.write(extra_conf)
    server = PostgresServer("127.0.0.1", port, "postgres", password, data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class RedisServer:
    host: str
    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes]
    config_file: Path

    def url(self, db: int = 0) -> str:
        return f"redis://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host=self.host, port=self.port, username=self.user, password=self.password, db=db
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def start(self) -> None:
        """(Re)start the same server on the same port: for restart-fault tests."""
        self.process = subprocess.Popen(
            ["redis-server", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    base = Path(tempfile.mkdtemp(prefix="orbis-redis-"))
    port = free_port()
    password = secrets.token_urlsafe(16)
    config = base / "redis.conf"
    # A named ACL user, like the appliance's; `default` is switched off.
    config.write_text(
        f'port {port}\nbind 127.0.0.1\ndir {base}\nsave ""\nappendonly no\n'
        f"user default off\nuser orbis on >{password} ~* &* +@all\n"
    )
    config.chmod(0o600)
    process = subprocess.Popen(
        ["redis-server", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = RedisServer("127.0.0.1", port, "orbis", password, process, config)
    try:
        wait_for_port(port)
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
