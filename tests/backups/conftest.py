"""Fixtures for the backup engine: an install directory, a seeded database, an executor."""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from backups import keys
from backups.executor import LocalExecutor
from orbisctl.core.config import OrbisConfig
from orbisctl.core.install import Install
from tests.objectstore import S3Server, s3_server
from tests.services import PostgresServer, RedisServer

SEED_SQL = """
CREATE TABLE agents (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE transcripts (
    id bigserial PRIMARY KEY,
    agent_id int NOT NULL REFERENCES agents(id),
    seq int NOT NULL,
    text text NOT NULL
);
CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                checksum text NOT NULL, applied_at timestamptz DEFAULT now());
INSERT INTO schema_migrations (version, name, checksum) VALUES (1, 'initial', 'x');
INSERT INTO agents (name) SELECT 'agent ' || g FROM generate_series(1, 5) g;
INSERT INTO transcripts (agent_id, seq, text)
    SELECT 1 + g % 5, g, 'hello, this is segment ' || g FROM generate_series(1, 2000) g;
"""


@dataclass
class Stack:
    """A stand-in for a running appliance: its install dir, database and Redis."""

    install: Install
    executor: LocalExecutor
    pg: PostgresServer
    redis_url: str

    def connect(self, dbname: str | None = None) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.pg.conninfo(dbname or self.executor.database), autocommit=True)

    def count(self, table: str) -> int:
        with self.connect() as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
            assert row is not None
            return int(row[0])

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def ring(self) -> keys.BackupKeyRing:
        return keys.load_key_ring(self.install.secrets_dir)


def make_install(root: Path) -> Install:
    secrets_dir = root / "secrets"
    secrets_dir.mkdir(parents=True, mode=0o700)
    keys.generate_backup_key(secrets_dir)
    (secrets_dir / "postgres_password").write_text("pg-secret\n")
    (secrets_dir / "postgres_password").chmod(0o600)
    if os.geteuid() == 0:  # mounted into containers, so owned by their uid (architecture.md)
        os.chown(secrets_dir / "postgres_password", 10001, 10001)
    (root / "tls").mkdir()
    (root / "tls" / "server.crt").write_text("CERTIFICATE\n")
    (root / "orbis.yaml").write_text("domain: voice.example.com\n")
    return Install(root, OrbisConfig())


@pytest.fixture
def stack(
    tmp_path: Path, pg_server: PostgresServer, database_url: str, redis_url: str
) -> Iterator[Stack]:
    install = make_install(tmp_path / "install")
    executor = LocalExecutor(database_url=database_url, redis_url=redis_url)
    result = Stack(install, executor, pg_server, redis_url)
    with result.connect() as conn:
        conn.execute(SEED_SQL.encode())
    client = result.redis()
    client.set("session:abc", "live-call")
    client.set("ratelimit:1.2.3.4", "7", ex=3600)
    client.close()
    yield result
    # Databases the restores left behind (kept old data, scratch copies).
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s",
            (executor.database + "\\_%",),
        ).fetchall()
    for (name,) in rows:
        pg_server.drop_database(str(name))


def hold_writer_lock(partial: Path) -> int:
    """Make `partial` look like a backup being written by a live process: its writer.pid
    locked as a writer holds it (close the returned descriptor to let go)."""
    fd = os.open(partial / "writer.pid", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, str(os.getpid()).encode())
    return fd


def random_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="session", autouse=True)
def _redis_snapshots_without_delay(redis_srv: RedisServer) -> None:
    """Redis waits 5 s (repl-diskless-sync-delay) for more replicas before streaming an RDB
    to `redis-cli --rdb`; the appliance has no replicas, so the wait is pure loss."""
    client = redis_srv.client()
    client.config_set("repl-diskless-sync-delay", 0)
    client.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3-compatible store on loopback (SeaweedFS over TLS) for backup.remote."""
    with s3_server(tmp_path_factory.mktemp("bundles-s3")) as server:
        yield server


@pytest.fixture
def bucket(store: S3Server) -> str:
    """A fresh bucket in the store, for one test."""
    name = f"bundles-{secrets.token_hex(4)}"
    store.create_bucket(name)
    return name


@pytest.fixture
def cli(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """`orbisctl` in-process on the stack's install, its backups in direct mode (by URL)."""
    monkeypatch.setenv("ORBIS_DIR", str(stack.install.root))
    monkeypatch.setenv("ORBIS_BACKUP_DATABASE_URL", stack.executor.database_url)
    monkeypatch.setenv("ORBIS_BACKUP_REDIS_URL", stack.executor.redis_url)
    monkeypatch.chdir(stack.install.root)
    return CliRunner()
