"""`python -m runtime.api` serves the API; `python -m runtime.api migrate` migrates the schema.

Errors a operator can fix (settings, an incompatible schema) are one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web

from runtime.api.app import create_app
from runtime.api.settings import MIGRATIONS_DIR, ApiSettings
from runtime.common.db import MigrationError, load_migrations, migrate
from runtime.common.keyring import KeyRingError
from runtime.common.logs import configure_logging
from runtime.common.settings import SettingsError

log = logging.getLogger("runtime.api")

USAGE = "usage: python -m runtime.api [serve|migrate]"


def _migrate(settings: ApiSettings) -> None:
    applied = asyncio.run(migrate(settings.database_conninfo, load_migrations(MIGRATIONS_DIR)))
    names = [f"{migration.version:04d}_{migration.name}" for migration in applied]
    log.info(
        "migrations applied" if names else "schema up to date", extra={"fields": {"applied": names}}
    )


def _serve(settings: ApiSettings) -> None:
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=10.0,
    )


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command not in ("serve", "migrate") or len(argv) > 1:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = ApiSettings.from_env(os.environ)
        configure_logging(settings.log_level, service="api")
        if command == "migrate":
            _migrate(settings)
        else:
            _serve(settings)
    except (SettingsError, KeyRingError) as exc:
        print(f"orbis api: {exc}", file=sys.stderr)
        return 2
    except MigrationError as exc:
        print(f"orbis api migrate: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"orbis api: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
