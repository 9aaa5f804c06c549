"""The database schema's migrations: ordered SQL files `NNNN_name.sql`.

Each runs in its own transaction and is recorded in `schema_migrations` with a checksum; a
session-level advisory lock keeps two migrators from racing. The runner refuses a database
whose schema is newer than the code (a downgrade would otherwise run old code against a schema
it does not know) and one whose applied migration files have since changed.

Apart from the pool (runtime/common/db.py): the operator's CLI reads the migrations too (the
schema version a backup needs), and it has psycopg but not the pool or the metrics.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.rows import tuple_row

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any fixed number: the key of the advisory lock serialising migrators.
_MIGRATION_LOCK_KEY = 0x0B15_0001


class MigrationError(RuntimeError):
    """The database cannot be migrated by this code; the message says why and what to do."""


class SchemaTooNewError(MigrationError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3… without gaps; got {versions}")
    return migrations


_CREATE_TABLE: LiteralString = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def migrate(conninfo: str, migrations: Sequence[Migration]) -> list[Migration]:
    """Apply pending migrations in order; returns those applied (empty when up to date)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(_CREATE_TABLE)
            applied = await _applied(conn)
            _check_compatible(applied, migrations)
            done = []
            for migration in migrations:
                if migration.version in applied:
                    continue
                async with conn.transaction():
                    # bytes: a migration file holds several statements (simple query protocol)
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                done.append(migration)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))


async def _applied(conn: psycopg.AsyncConnection[Any]) -> dict[int, str]:
    # Tuple rows whatever the connection's row factory (the pool's returns dicts).
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute("SELECT version, checksum FROM schema_migrations")
        return {int(version): str(checksum) for version, checksum in await cursor.fetchall()}


def _check_compatible(applied: dict[int, str], migrations: Sequence[Migration]) -> None:
    known = {migration.version: migration for migration in migrations}
    newest_known = max(known, default=0)
    newest_applied = max(applied, default=0)
    if newest_applied > newest_known:
        raise SchemaTooNewError(
            f"the database schema is at version {newest_applied} but this code knows only up "
            f"to {newest_known}; run the newer release (or restore a matching backup)"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{known[version].name} changed after it was applied; "
                "migrations are append-only: add a new file instead"
            )


async def pending_migrations(
    conn: psycopg.AsyncConnection[Any], migrations: Sequence[Migration]
) -> list[int]:
    """Versions the code has and the database lacks (for readiness)."""
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cursor.fetchone()
    if row is None or not row[0]:
        return [migration.version for migration in migrations]
    applied = await _applied(conn)
    return [migration.version for migration in migrations if migration.version not in applied]
