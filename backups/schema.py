"""The database schema version: what a database holds, and what this code knows.

The API's migration runner (`runtime.common.db`) records applied migrations in
`schema_migrations`; a backup records the highest applied version, and restore refuses a
backup whose schema is newer than the migrations shipped with this code.
"""

from __future__ import annotations

from runtime.api.settings import MIGRATIONS_DIR
from runtime.common.db import load_migrations

SCHEMA_TABLE = "schema_migrations"

# Runs inside the backup's snapshot session; NULL when the database has never been migrated.
SCHEMA_VERSION_SQL = (  # a constant table name, no input
    f"SELECT CASE WHEN to_regclass('public.{SCHEMA_TABLE}') IS NULL THEN NULL "  # noqa: S608
    f"ELSE (SELECT max(version)::text FROM public.{SCHEMA_TABLE}) END"
)


def code_schema_version() -> int:
    """The newest migration this code ships (0 when it ships none)."""
    return max((migration.version for migration in load_migrations(MIGRATIONS_DIR)), default=0)
