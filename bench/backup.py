"""Backup and restore speed beside raw pg_dump/pg_restore, on the same data, in the same run.

    .venv/bin/python -m bench.backup                 # ~64 MB database: a quick run
    .venv/bin/python -m bench.backup --size-mb 1024  # the ~1 GB figure in docs/benchmarks.md

Starts its own PostgreSQL 15 and Redis 7 on loopback (the test helpers' real servers), fills
a transcripts-like database (agents, calls, transcript segments of natural-ish text), then
times, in this order and `--repeat` times each:

- raw `pg_dump --format=custom` to a file, and raw `pg_restore` of it into a new database;
- `orbisctl backup` (`backups.create.create_backup`: snapshot + row counts, pg_dump streamed
  through AES-GCM, Redis RDB, config bundle, manifest);
- `orbisctl restore` (`backups.restore.restore_backup`, no safety backup: verify pass with
  checksums and decryption of every byte and `pg_restore --list`, restore into a new database,
  row counts, rename switch, Redis).

Timings on shared machines are noisy; the ratios against raw, measured in the same run, are
the figures. Prints a table and writes JSON (`--output`).

`--drill` times the recovery drill's RTO instead, on the Docker stack (the drill restores into
a scratch compose project, so it needs one):

    .venv/bin/python -m bench.backup --drill --size-mb 1024

It fills the same data in the loopback server (in a schema `bench`, beside the application's
own tables), dumps it, inits a stack in a temp dir (emulator model, local images, free ports,
its own project name), `up`, makes one tenant with an agent through the API (so every smoke
check of the drill runs), loads the dump with a raw `pg_restore` inside the stack's postgres
container (timed: the raw figure the RTO is read against), then `orbisctl backup create` and
`orbisctl drill` (timed; the drill's report gives the RTO and its step timings), and always
`down --volumes` at the end. Every command is bounded by `--step-timeout`.
"""

from __future__ import annotations

import argparse
import json
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml

from backups import keys
from backups.create import create_backup
from backups.executor import LocalExecutor, pg_tool
from backups.ports import NoAppControl
from backups.restore import restore_backup
from orbisctl.core.config import OrbisConfig
from orbisctl.core.install import Install
from tests.services import PostgresServer, free_port, postgres_server, redis_server

WORDS = [
    "hello",
    "thanks",
    "order",
    "delivery",
    "tomorrow",
    "appointment",
    "booking",
    "price",
    "refund",
    "account",
    "password",
    "reset",
    "the",
    "a",
    "to",
    "of",
    "and",
    "please",
    "could",
    "you",
    "I",
    "would",
    "like",
    "check",
    "status",
    "shipping",
    "address",
    "change",
    "cancel",
    "subscription",
    "monday",
    "friday",
    "morning",
    "afternoon",
    "agent",
    "customer",
    "number",
    "confirm",
    "yes",
    "no",
    "sure",
    "great",
    "problem",
    "help",
    "support",
    "email",
    "phone",
    "invoice",
    "payment",
    "card",
]


def fill_database(
    server: PostgresServer, dbname: str, size_mb: int, *, schema: str = "public"
) -> dict[str, int]:
    """Grow the database to about `size_mb` of table data in `schema`; return its row counts."""
    segments_per_mb = 4200  # ~250 bytes per segment row with its index
    segments = max(size_mb * segments_per_mb, 1000)
    calls = max(segments // 40, 10)
    with psycopg.connect(server.conninfo(dbname), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}".encode())
        conn.execute(f"SET search_path TO {schema}".encode())
        conn.execute(
            b"""
            CREATE TABLE agents (id serial PRIMARY KEY, name text, instructions text);
            CREATE TABLE calls (id bigserial PRIMARY KEY, agent_id int REFERENCES agents(id),
                                started_at timestamptz, duration_ms int, end_reason text);
            CREATE TABLE transcript_segments (
                call_id bigint REFERENCES calls(id), seq int, role text, text text,
                at timestamptz, PRIMARY KEY (call_id, seq));
            INSERT INTO agents (name, instructions)
                SELECT 'agent ' || g, repeat('Be helpful and brief. ', 20)
                FROM generate_series(1, 50) g;
            """
        )
        # 5000 sentences of 8-24 words, common words far more often than rare ones (a
        # vocabulary of everyday words plus 3000 made-up ones), so the dump compresses about
        # as much as real transcripts do.
        conn.execute(
            "CREATE TEMP TABLE vocabulary AS SELECT array_cat(%s::text[], array_agg("
            "translate(substr(md5(i::text), 1, 3 + mod(i, 7)), '0123456789', 'aeiouyrstn'))) "
            "AS w FROM generate_series(1, 3000) i",
            (WORDS,),
        )
        conn.execute(
            "CREATE TEMP TABLE sentences AS SELECT s AS id, "
            "(SELECT string_agg(w[1 + floor(power(random(), 3) * array_length(w, 1))::int], ' ') "
            " FROM generate_series(1, 8 + mod(s, 17)), vocabulary) AS body "
            "FROM generate_series(0, 4999) s"
        )
        conn.execute(
            "INSERT INTO calls (agent_id, started_at, duration_ms, end_reason) "
            "SELECT 1 + mod(g, 50), now() - g * interval '1 minute', 1000 + mod(g, 600000), 'hangup' "
            "FROM generate_series(1, %s) g",
            (calls,),
        )
        conn.execute(
            "INSERT INTO transcript_segments (call_id, seq, role, text, at) "
            "SELECT 1 + g / 40, mod(g, 40), CASE WHEN mod(g, 2) = 0 THEN 'user' ELSE 'agent' END, "
            "s.body || ' ' || md5(g::text), now() "
            "FROM generate_series(0, %s) g JOIN sentences s ON s.id = mod(g::bigint * 7919, 5000)",
            (segments - 1,),
        )
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    print(f"database: {size[0] / 2**20:.0f} MiB on disk" if size else "database filled")
    return {"calls": calls, "segments": segments}


def _drop_kept_databases(server: PostgresServer) -> None:
    """The restores keep the replaced database; the bench does not need them."""
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'orbis\\_pre\\_restore\\_%'"
        ).fetchall()
    for (name,) in names:
        server.drop_database(str(name))


def _run(argv: list[str], env: dict[str, str]) -> None:
    subprocess.run(argv, check=True, env=env, capture_output=True)


# --- the drill on the Docker stack ----------------------------------------------------------

ORBISCTL = str(Path(sys.executable).parent / "orbisctl")
BENCH_SCHEMA = "bench"  # beside the application's own agents/calls tables, not over them
TENANT_PASSWORD = "bench password, not a secret"  # noqa: S105
TENANT_ORIGIN = "https://shop.example"


def _orbisctl(root: Path, timeout: float, *args: str) -> str:
    """Run orbisctl on the bench's install; its stdout, or SystemExit with its error."""
    result = subprocess.run(
        [ORBISCTL, *args, "--dir", str(root)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"orbisctl {args[0]} failed: {result.stderr.strip()[-2000:]}")
    return result.stdout


@contextmanager
def _stack(work: Path, timeout: float) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A fresh install (emulator model, local images, free ports) that is up; always torn
    down with its volumes."""
    root = work / "install"
    root.mkdir()
    project = f"orbis-bench-{secrets.token_hex(3)}"
    (root / "orbis.yaml").write_text(
        yaml.safe_dump({"project_name": project, "images": {"source": "local"}})
    )
    ports = {"http": free_port(), "https": free_port()}
    _orbisctl(
        root, timeout, "init", "--non-interactive", "--model", "emulator",
        "--http-port", str(ports["http"]), "--https-port", str(ports["https"]),
    )  # fmt: skip
    try:
        _orbisctl(root, timeout, "images", "build")
        _orbisctl(root, timeout, "up", "--timeout", str(int(timeout)))
        yield root, ports
    finally:
        subprocess.run(
            [ORBISCTL, "down", "--volumes", "--yes", "--dir", str(root)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )


def _post(url: str, context: ssl.SSLContext, body: dict[str, Any], token: str = "") -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # An https URL the bench builds itself, to its own stack.
    request = urllib.request.Request(  # noqa: S310
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def _tenant(root: Path, https_port: int) -> None:
    """One owner with an agent, through nginx: the drill's login, agent and call checks run."""
    context = ssl.create_default_context(cafile=str(root / "tls" / "ca.crt"))
    base = f"https://localhost:{https_port}/api/v1"
    owner = {"org_name": "Bench", "email": "bench@example.com", "password": TENANT_PASSWORD}
    token = _post(f"{base}/auth/signup", context, owner)["access_token"]
    agent = {"name": "Front desk", "instructions": "Be brief.", "allowed_origins": [TENANT_ORIGIN]}
    _post(f"{base}/agents", context, agent, token)


def _load_into_stack(root: Path, dump_file: Path, timeout: float) -> float:
    """Raw `pg_restore` of the dump into the stack's database, inside its postgres container."""
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    command = [
        "docker", "compose", "--project-name", config["project_name"],
        "--project-directory", str(root), "exec", "-T", "postgres",
        "pg_restore", "--username", "orbis", "--dbname", "orbis",
        "--no-owner", "--no-privileges", "--exit-on-error",
    ]  # fmt: skip
    started = time.perf_counter()
    with dump_file.open("rb") as dump:
        result = subprocess.run(
            command, stdin=dump, capture_output=True, timeout=timeout, check=False
        )
    if result.returncode != 0:
        raise SystemExit(f"pg_restore into the stack failed: {result.stderr.decode()[-2000:]}")
    return time.perf_counter() - started


def drill_bench(size_mb: int, output: Path, step_timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="orbis-bench-") as tmp:
        work = Path(tmp)
        dump_file = work / "bench.dump"
        with postgres_server() as pg:
            source = pg.create_database("orbis")
            started = time.perf_counter()
            rows = fill_database(pg, source, size_mb, schema=BENCH_SCHEMA)
            fill_seconds = time.perf_counter() - started
            with psycopg.connect(pg.conninfo(source)) as conn:
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            database_bytes = int(size[0]) if size else 0
            dump = [
                pg_tool("pg_dump"), "--host", pg.host, "--port", str(pg.port),
                "--username", pg.user, "--dbname", source, "--format=custom",
                "--schema", BENCH_SCHEMA, "--file", str(dump_file),
            ]  # fmt: skip
            _run(dump, {"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"})
        dump_bytes = dump_file.stat().st_size
        print(f"dump of the bench schema: {dump_bytes / 2**20:.0f} MiB")
        with _stack(work, step_timeout) as (root, ports):
            _tenant(root, ports["https"])
            raw_restore = _load_into_stack(root, dump_file, step_timeout)
            print(f"raw pg_restore into the stack: {raw_restore:.1f} s")
            clock = time.perf_counter()
            backup = json.loads(_orbisctl(root, step_timeout, "backup", "create", "--json"))
            backup_seconds = time.perf_counter() - clock
            print(f"orbisctl backup: {backup_seconds:.1f} s")
            clock = time.perf_counter()
            report = json.loads(_orbisctl(root, step_timeout, "drill", backup["id"], "--json"))
            drill_seconds = time.perf_counter() - clock
    result: dict[str, Any] = {
        "mode": "drill",
        "size_mb": size_mb,
        "database_bytes": database_bytes,
        "rows": rows,
        "fill_seconds": round(fill_seconds, 1),
        "raw_dump_bytes": dump_bytes,
        "raw_pg_restore_in_stack_seconds": round(raw_restore, 1),
        "backup_seconds": round(backup_seconds, 1),
        "backup_bytes": backup["size"],
        "drill_ok": report["ok"],
        "drill_wall_seconds": round(drill_seconds, 1),
        "rto_seconds": report["rto_seconds"],
        "teardown_seconds": report["teardown_seconds"],
        "steps": report["steps"],
        "checks": {check["name"]: check["ok"] for check in report["checks"]},
        "rto_vs_raw_pg_restore": (
            round(report["rto_seconds"] / raw_restore, 1) if report["rto_seconds"] else None
        ),
    }
    print(f"{'measure':<40}{'seconds':>10}")
    print(f"{'raw pg_restore into the stack':<40}{raw_restore:>10.1f}")
    print(f"{'orbisctl backup':<40}{backup_seconds:>10.1f}")
    for step, seconds in report["steps"].items():
        print(f"{'  drill: ' + step:<40}{seconds:>10.1f}")
    rto = report["rto_seconds"]
    print(f"{'drill RTO':<40}{rto if rto is not None else float('nan'):>10.1f}")
    print(f"{'drill teardown (not in the RTO)':<40}{report['teardown_seconds']:>10.1f}")
    print(f"drill {'passed' if report['ok'] else 'FAILED: ' + report['error']}")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="approximate table data size")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement")
    parser.add_argument("--output", type=Path, help="JSON results (default: bench/results/)")
    parser.add_argument(
        "--drill", action="store_true", help="time the drill's RTO on the Docker stack"
    )
    parser.add_argument(
        "--step-timeout", type=float, default=1800.0, help="seconds any one --drill step may take"
    )
    args = parser.parse_args()
    if args.drill:
        drill_bench(
            args.size_mb, args.output or Path("bench/results/backup-drill.json"), args.step_timeout
        )
        return
    args.output = args.output or Path("bench/results/backup.json")

    with postgres_server() as pg, redis_server() as rd, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        live = pg.create_database("orbis")
        started = time.perf_counter()
        rows = fill_database(pg, live, args.size_mb)
        fill_seconds = time.perf_counter() - started
        client = rd.client()
        client.config_set("repl-diskless-sync-delay", 0)  # no replicas here, as in the stack
        for index in range(1000):
            client.set(f"session:{index}", "x" * 200, ex=3600)
        client.close()

        root = work / "install"
        (root / "secrets").mkdir(parents=True)
        keys.generate_backup_key(root / "secrets")
        (root / "orbis.yaml").write_text("domain: bench.example.com\n")
        install = Install(root, OrbisConfig())
        executor = LocalExecutor(database_url=pg.url(live), redis_url=rd.url(0))
        ring = keys.load_key_ring(install.secrets_dir)
        env = {"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"}
        conn_args = ["--host", pg.host, "--port", str(pg.port), "--username", pg.user]
        dump_file = work / "raw.dump"

        timings: dict[str, list[float]] = {
            name: [] for name in ("raw_dump", "raw_restore", "backup", "restore")
        }
        last_backup: list[Path] = []

        def timed(name: str, action: Callable[[], object]) -> None:
            clock = time.perf_counter()
            action()
            timings[name].append(time.perf_counter() - clock)

        def raw_round() -> None:
            dump = [pg_tool("pg_dump"), *conn_args, "--dbname", live, "--format=custom"]
            timed("raw_dump", lambda: _run([*dump, "--file", str(dump_file)], env))
            target = pg.create_database("raw_restore")
            restore = [pg_tool("pg_restore"), *conn_args, "--dbname", target, "--exit-on-error"]
            timed("raw_restore", lambda: _run([*restore, str(dump_file)], env))
            pg.drop_database(target)

        def orbis_round() -> None:
            timed(
                "backup",
                lambda: last_backup.append(
                    install.repository / create_backup(install, executor, ring).backup_id
                ),
            )
            timed(
                "restore",
                lambda: restore_backup(
                    install,
                    executor,
                    ring,
                    last_backup[-1],
                    app=NoAppControl(),
                    safety_backup=False,
                ),
            )
            _drop_kept_databases(pg)

        # Alternate which goes first, so neither always meets the colder cache.
        for attempt in range(args.repeat):
            rounds = (raw_round, orbis_round) if attempt % 2 == 0 else (orbis_round, raw_round)
            for run_round in rounds:
                run_round()
        path = last_backup[-1]
        raw_bytes = dump_file.stat().st_size
        archive_bytes = sum(f.stat().st_size for f in path.iterdir())

    median = {name: statistics.median(values) for name, values in timings.items()}
    result: dict[str, Any] = {
        "size_mb": args.size_mb,
        "rows": rows,
        "fill_seconds": round(fill_seconds, 1),
        "raw_dump_bytes": raw_bytes,
        "archive_bytes": archive_bytes,
        "seconds": {name: round(value, 2) for name, value in median.items()},
        "backup_vs_raw_dump": round(median["backup"] / median["raw_dump"], 2),
        "restore_vs_raw_restore": round(median["restore"] / median["raw_restore"], 2),
        "runs": args.repeat,
    }
    print(f"{'measure':<28}{'seconds':>10}{'ratio':>8}")
    print(f"{'raw pg_dump -Fc':<28}{median['raw_dump']:>10.2f}{'1.00':>8}")
    print(f"{'orbisctl backup':<28}{median['backup']:>10.2f}{result['backup_vs_raw_dump']:>8.2f}")
    print(f"{'raw pg_restore':<28}{median['raw_restore']:>10.2f}{'1.00':>8}")
    print(
        f"{'orbisctl restore':<28}{median['restore']:>10.2f}"
        f"{result['restore_vs_raw_restore']:>8.2f}"
    )
    print(f"raw dump {raw_bytes / 2**20:.1f} MiB, backup archive {archive_bytes / 2**20:.1f} MiB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
