"""Continuous archiving's physical path beside the raw tools, on the same data, in one run.

    .venv/bin/python -m bench.archive                  # ~64 MB database: a quick run
    .venv/bin/python -m bench.archive --size-mb 1024   # the ~1 GB figure in docs/benchmarks.md

Starts its own PostgreSQL 15 on loopback with WAL archived by pgBackRest 2.45 into a local
encrypted repository (backups/archive.py's configuration: zstd, aes-256-cbc, async push, two
processes), fills the transcripts-like database of bench/backup.py, then times:

- raw `pg_basebackup -X stream` into a directory (the baseline for a base backup);
- our full base backup (`archive.base_backup`: pgBackRest with compression and encryption);
- raw `pgbackrest restore` of that backup into an empty directory (to its end, no target);
- our point-in-time restore (`archive.restore_to_time` to a moment between two writes) plus
  the recovery of the restored server until it is promoted;
- the archive lag under a steady write load: for `--lag-writes` writes spread over the run,
  the seconds from a commit until pg_stat_archiver counts the segment holding it. Its bound is
  archive_timeout (60 s) when writes are slow; heavy writes fill segments sooner.

Prints a table and writes JSON (`--output`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from backups import archive, pgbackrest_config
from backups.executor import LocalExecutor, pg_tool
from bench.backup import fill_database
from tests.backups.archiving import (
    archiving_conf,
    as_postgres,
    configure,
    empty_dir,
    past_the_newest_backup,
    restored_server,
    server_now,
    wait_promoted,
)
from tests.services import PostgresServer, as_postgres_user, postgres_server

PASSPHRASE = "bench passphrase, not a secret"  # noqa: S105


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _segment_of_commit(server: PostgresServer, value: int) -> str:
    """Commit one write; the WAL segment that holds it."""
    with psycopg.connect(server.conninfo("orbis"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_writes (n int, at timestamptz)")
        conn.execute("INSERT INTO bench_writes VALUES (%s, clock_timestamp())", (value,))
        row = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()
    assert row is not None
    return str(row[0])


def _lag(
    server: PostgresServer, executor: LocalExecutor, writes: int, timeout: float
) -> list[float]:
    """Seconds from each commit until its segment is archived, under a steady background load
    (a writer inserting transcript-sized rows) that stops when the samples are taken."""
    with psycopg.connect(server.conninfo("orbis"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_load (body text)")
    done = threading.Event()

    def load() -> None:
        with psycopg.connect(server.conninfo("orbis"), autocommit=True) as conn:
            while not done.is_set():
                conn.execute("INSERT INTO bench_load SELECT repeat(md5(random()::text), 8)")
                time.sleep(0.005)

    writer = threading.Thread(target=load, daemon=True)
    writer.start()
    lags = []
    try:
        for value in range(writes):
            segment = _segment_of_commit(server, value)
            committed = time.monotonic()
            deadline = committed + timeout
            while (archive.archiver_state(executor).last_archived_wal or "")[:24] < segment:
                if time.monotonic() > deadline:
                    raise SystemExit(f"segment {segment} not archived in {timeout:.0f} s")
                time.sleep(0.2)
            lags.append(time.monotonic() - committed)
    finally:
        done.set()
        writer.join(timeout=10)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="approximate table data size")
    parser.add_argument("--lag-writes", type=int, default=5, help="commits whose lag is timed")
    parser.add_argument("--output", type=Path, default=Path("bench/results/archive.json"))
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="orbis-bench-archive-"))
    as_postgres(base)
    try:
        with postgres_server(
            extra_conf=archiving_conf(base / "conf"), initdb_args=("--data-checksums",)
        ) as pg:
            (base / "repo").mkdir()
            as_postgres(base / "repo")
            pgbackrest = configure(
                base / "conf",
                pg,
                [pgbackrest_config.Repository(str(base / "repo"))],
                [pgbackrest_config.RepositoryKeys(PASSPHRASE)],
            )
            archive.create_stanza(pgbackrest)
            live = pg.create_database("orbis")
            fill_database(pg, live, args.size_mb)
            executor = LocalExecutor(pg.url(live), "")
            seconds: dict[str, float] = {}

            raw_dir = empty_dir(base, "raw-basebackup")
            basebackup = [
                *as_postgres_user(),
                pg_tool("pg_basebackup"),
                "--host", pg.host, "--port", str(pg.port), "--username", pg.user,
                "--pgdata", str(raw_dir), "--wal-method=stream", "--checkpoint=fast",
            ]  # fmt: skip
            seconds["raw_basebackup"] = _timed(
                lambda: subprocess.run(
                    basebackup,
                    check=True,
                    capture_output=True,
                    env={**os.environ, "PGPASSWORD": pg.password},
                )
            )
            seconds["base_backup"] = _timed(
                lambda: archive.base_backup(pgbackrest, archive.BackupKind.FULL)
            )
            raw_bytes = sum(f.stat().st_size for f in raw_dir.rglob("*") if f.is_file())
            repo_bytes = sum(f.stat().st_size for f in (base / "repo").rglob("*") if f.is_file())
            shutil.rmtree(raw_dir)

            past_the_newest_backup(pgbackrest, pg)
            target = server_now(pg)
            # Recovery stops at the first commit after the target: there must be one.
            _segment_of_commit(pg, -1)
            archive.check_archiving(pgbackrest)

            raw_restore = empty_dir(base, "raw-restore")
            seconds["raw_pgbackrest_restore"] = _timed(
                lambda: pgbackrest.run(
                    [f"--pg1-path={raw_restore}", "--type=immediate", "--target-action=promote",
                     "restore"],
                    what="restore",
                )
            )  # fmt: skip
            shutil.rmtree(raw_restore)

            pitr = empty_dir(base, "pitr")
            seconds["pitr_restore"] = _timed(
                lambda: archive.restore_to_time(pgbackrest, str(pitr), target)
            )

            def recover() -> None:
                with restored_server(pitr) as (port, log):
                    try:
                        wait_promoted(pg, port, timeout=600)
                    except psycopg.Error as exc:
                        tail = "\n".join(log.read_text().splitlines()[-15:])
                        raise SystemExit(f"the restored server failed ({exc}):\n{tail}") from None

            seconds["pitr_recovery_to_promotion"] = _timed(recover)
            lags = _lag(pg, executor, args.lag_writes, timeout=180)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    result: dict[str, Any] = {
        "size_mb": args.size_mb,
        "raw_basebackup_bytes": raw_bytes,
        "repository_bytes": repo_bytes,
        "seconds": {name: round(value, 2) for name, value in seconds.items()},
        "base_backup_vs_raw_basebackup": round(
            seconds["base_backup"] / seconds["raw_basebackup"], 2
        ),
        "pitr_restore_vs_raw_restore": round(
            seconds["pitr_restore"] / seconds["raw_pgbackrest_restore"], 2
        ),
        "archive_lag_seconds": [round(lag, 1) for lag in lags],
    }
    print(f"{'measure':<34}{'seconds':>10}{'ratio':>8}")
    print(f"{'raw pg_basebackup -X stream':<34}{seconds['raw_basebackup']:>10.2f}{'1.00':>8}")
    print(
        f"{'full base backup (pgBackRest)':<34}{seconds['base_backup']:>10.2f}"
        f"{result['base_backup_vs_raw_basebackup']:>8.2f}"
    )
    print(f"{'raw pgbackrest restore':<34}{seconds['raw_pgbackrest_restore']:>10.2f}{'1.00':>8}")
    print(
        f"{'point-in-time restore':<34}{seconds['pitr_restore']:>10.2f}"
        f"{result['pitr_restore_vs_raw_restore']:>8.2f}"
    )
    print(f"{'  + recovery to promotion':<34}{seconds['pitr_recovery_to_promotion']:>10.2f}")
    print(
        f"base backup {raw_bytes / 2**20:.0f} MiB raw, repository {repo_bytes / 2**20:.0f} MiB; "
        f"archive lag per commit (s): {', '.join(f'{lag:.1f}' for lag in lags)}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
