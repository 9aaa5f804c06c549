"""The database schema version: what a database holds, and what this code knows.

The API's migration runner (`runtime.common.migrations`) records applied migrations in
`schema_migrations`; a backup records the highest applied version, and restore refuses a
backup whose schema is newer than the migrations shipped with this code.
"""

from __future__ import annotations

from backups.process import PsqlSession
from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.migrations import load_migrations

SCHEMA_TABLE = "schema_migrations"


def database_schema_version(session: PsqlSession) -> int | None:
    """The highest applied migration; None for a database that was never migrated."""
    exists = session.scalar(f"SELECT to_regclass('public.{SCHEMA_TABLE}') IS NOT NULL")
    if exists != "t":
        return None
    # A constant table name: nothing here comes from input.
    newest = session.scalar(f"SELECT max(version)::text FROM public.{SCHEMA_TABLE}")  # noqa: S608
    return int(newest) if newest else None


def code_schema_version() -> int:
    """The newest migration this code ships (0 when it ships none)."""
    return max((migration.version for migration in load_migrations(MIGRATIONS_DIR)), default=0)
