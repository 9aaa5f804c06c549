"""Helpers for the pgBackRest tests (and bench/archive.py): a cluster run as `postgres`, writes
around a target time, and a server started on a restored data directory until it is promoted."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from backups import archive, pgbackrest_config
from backups.executor import Executor
from tests.services import PG_BIN, PostgresServer, as_postgres_user, free_port, stop_cluster


def as_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def insert(server: PostgresServer, values: range) -> None:
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS writes (n int PRIMARY KEY, at timestamptz)")
        for value in values:
            conn.execute("INSERT INTO writes VALUES (%s, clock_timestamp())", (value,))


def server_now(server: PostgresServer) -> datetime:
    with psycopg.connect(server.conninfo()) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment.astimezone(UTC)


@contextlib.contextmanager
def restored_server(data_dir: Path) -> Iterator[tuple[int, Path]]:
    """A server on a restored data directory (its own port and socket): (port, its log);
    stopped on leaving."""
    port = free_port()
    log = data_dir.parent / f"{data_dir.name}.log"
    options = f"-p {port} -c unix_socket_directories={data_dir.parent}"
    subprocess.run(
        [*as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(data_dir), "-l", str(log),
         "-o", options, "-w", "-t", "120", "start"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    try:
        yield port, log
    finally:
        stop_cluster(data_dir)


def wait_promoted(server: PostgresServer, port: int, *, timeout: float = 60) -> None:
    """Until the server on `port` (a restored one) has left recovery."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.conninfo(), port=port, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and not row[0]:
                return
            assert time.monotonic() < deadline, "the restored server never left recovery"
            time.sleep(0.1)


def empty_dir(parent: Path, name: str) -> Path:
    """A new directory of mode 0700 that postgres owns (a restore's target)."""
    path = parent / name
    path.mkdir(mode=0o700)
    as_postgres(path)
    return path


def rows_restored_to(
    pgbackrest: archive.PgBackRest,
    server: PostgresServer,
    directory: Path,
    target: datetime | None,
) -> list[int]:
    """Restore into the empty `directory` to `target` (None: the latest), start a server on
    it, and read the `writes` it holds once promoted."""
    archive.restore_to_time(pgbackrest, str(directory), target)
    with restored_server(directory) as (port, _log):
        wait_promoted(server, port)
        with psycopg.connect(server.conninfo(), port=port) as conn:
            return [n for (n,) in conn.execute("SELECT n FROM writes ORDER BY n").fetchall()]


def past_the_newest_backup(
    pgbackrest: archive.PgBackRest, server: PostgresServer, *, repo: int = 1
) -> None:
    """Until the server's clock is a second past the newest base backup's stop: pgBackRest
    keeps whole seconds, and a target must come after a backup that stopped before it."""
    state = next(s for s in archive.repository_states(pgbackrest) if s.repo == repo)
    newest = state.newest
    assert newest is not None, "no base backup in the repository"
    earliest = newest.stopped + timedelta(seconds=1)
    deadline = time.monotonic() + 5
    while server_now(server) < earliest:
        assert time.monotonic() < deadline, "the server's clock does not reach the backup's"
        time.sleep(0.05)


def writes_around_a_target(server: PostgresServer) -> datetime:
    """Rows 0..9, then the moment returned (the server's clock), then rows 10..19: a restore
    to that moment must hold exactly rows 0..9."""
    insert(server, range(10))
    target = server_now(server)
    insert(server, range(10, 20))
    return target


def archived_after(executor: Executor, moment: datetime) -> archive.ArchiverState:
    """pg_stat_archiver once it records a push after `moment`: the async push can put a
    segment into the repository before the server's archiver process counts it."""
    deadline = time.monotonic() + 30
    while True:
        archiver = archive.archiver_state(executor)
        if archiver.last_archived_at is not None and archiver.last_archived_at > moment:
            return archiver
        assert time.monotonic() < deadline, f"pg_stat_archiver stays at {archiver}"
        time.sleep(0.2)


def configure(
    directory: Path,
    server: PostgresServer,
    repositories: Sequence[pgbackrest_config.Repository],
    keys: Sequence[pgbackrest_config.RepositoryKeys],
) -> archive.PgBackRest:
    """pgBackRest's two configuration halves for `server` under `directory` (which postgres
    may read), and the PgBackRest that runs as postgres with them."""
    for sub in ("", "conf.d", "spool", "lock"):
        (directory / sub).mkdir(exist_ok=True)
        as_postgres(directory / sub)
    cluster = pgbackrest_config.ClusterLocation(
        str(server.data_dir), str(server.data_dir.parent), server.port
    )
    workspace = pgbackrest_config.Workspace(str(directory / "spool"), str(directory / "lock"))
    (directory / "pgbackrest.conf").write_text(
        pgbackrest_config.render_config(cluster, repositories, workspace)
    )
    secret = directory / "conf.d" / "secrets.conf"
    secret.write_text(pgbackrest_config.render_secret_config(keys))
    secret.chmod(0o600)
    as_postgres(secret)
    return archive.PgBackRest(
        as_postgres_user(),
        str(directory / "pgbackrest.conf"),
        str(directory / "conf.d"),
        {"PGPASSWORD": server.password},
    )


def archiving_conf(directory: Path) -> str:
    """postgresql.conf lines that archive through the configuration `configure` writes into
    `directory` (the server runs archive-push as itself)."""
    as_server = archive.PgBackRest(
        (), str(directory / "pgbackrest.conf"), str(directory / "conf.d")
    )
    return (
        "wal_level = replica\narchive_mode = on\narchive_timeout = 60\n"
        f"archive_command = '{archive.archive_command(as_server)}'\n"
    )
