"""Migrations: idempotent, refuse a newer schema or an edited migration; the CLI entry point."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.migrations import (
    Migration,
    MigrationError,
    SchemaTooNewError,
    load_migrations,
    migrate,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def test_migrate_is_idempotent(database_url: str) -> None:
    migrations = load_migrations(MIGRATIONS_DIR)
    first = await migrate(database_url, migrations)
    assert [m.version for m in first] == [m.version for m in migrations]
    assert await migrate(database_url, migrations) == []
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert count == (len(migrations),)


async def test_refuses_a_schema_newer_than_the_code(database_url: str) -> None:
    migrations = load_migrations(MIGRATIONS_DIR)
    future = Migration(len(migrations) + 1, "future", "CREATE TABLE future_thing (id int);")
    await migrate(database_url, [*migrations, future])
    with pytest.raises(SchemaTooNewError, match="newer release"):
        await migrate(database_url, migrations)


async def test_refuses_an_edited_migration(database_url: str) -> None:
    migrations = load_migrations(MIGRATIONS_DIR)
    await migrate(database_url, migrations)
    edited = Migration(1, migrations[0].name, migrations[0].sql + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(database_url, [edited, *migrations[1:]])


def test_load_refuses_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(tmp_path)


def _run_module(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime.api", *args],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_command_reads_password_file(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    password = str(info.pop("password"))
    secret = tmp_path / "postgres_password"
    secret.write_text(password + "\n")
    env = {
        "ORBIS_DATABASE_URL": psycopg.conninfo.make_conninfo(**info),  # type: ignore[arg-type]
        "ORBIS_DATABASE_PASSWORD_FILE": str(secret),
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_JWT_KEYS_FILE": str(tmp_path / "unused.json"),
        "ORBIS_INTERNAL_TOKEN_FILE": str(secret),
        "ORBIS_PUBLIC_URL": "https://voice.test",
    }
    first = _run_module(["migrate"], env)
    assert first.returncode == 0, first.stderr
    names = [f"{m.version:04d}_{m.name}" for m in load_migrations(MIGRATIONS_DIR)]
    assert f'"applied": {json.dumps(names)}' in first.stderr
    again = _run_module(["migrate"], env)
    assert again.returncode == 0, again.stderr
    assert "schema up to date" in again.stderr


def test_missing_setting_is_one_clean_line() -> None:
    result = _run_module(["migrate"], {})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "orbis api: ORBIS_PUBLIC_URL is not set; set it in the service's environment"
    )


def test_migrate_command_refuses_a_newer_schema_in_one_line(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    asyncio.run(migrate(database_url, load_migrations(MIGRATIONS_DIR)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')"
        )
    token = tmp_path / "internal_token"
    token.write_text("t\n")
    env = {
        "ORBIS_DATABASE_URL": database_url,
        "ORBIS_REDIS_URL": redis_url,
        "ORBIS_JWT_KEYS_FILE": str(tmp_path / "unused.json"),
        "ORBIS_INTERNAL_TOKEN_FILE": str(token),
        "ORBIS_PUBLIC_URL": "https://voice.test",
    }
    result = _run_module(["migrate"], env)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1
    assert "schema is at version 999" in result.stderr
    assert "Traceback" not in result.stderr


async def test_webhook_secrets_are_backfilled_per_agent(database_url: str) -> None:
    migrations = load_migrations(MIGRATIONS_DIR)
    await migrate(database_url, migrations[:1])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO orgs (id, name, referral_code) VALUES (gen_random_uuid(), 'o', 'C')"
        )
        for public_id in ("agt_a", "agt_b"):
            conn.execute(
                "INSERT INTO agents (org_id, public_id, name, instructions, voice, language, "
                "greeting, max_session_seconds, max_concurrent_calls) "
                "SELECT id, %s, 'n', 'i', 'Puck', 'en-US', '', 600, 10 FROM orgs",
                (public_id,),
            )
    await migrate(database_url, migrations)
    with psycopg.connect(database_url) as conn:
        secrets = [row[0] for row in conn.execute("SELECT webhook_secret FROM agents")]
    assert len(set(secrets)) == 2
    assert all(len(secret) == 64 and int(secret, 16) for secret in secrets)
