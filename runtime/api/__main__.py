"""`python -m runtime.api` serves the API; `python -m runtime.api migrate` migrates the schema.

Errors a operator can fix (settings, an incompatible schema) are one line on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import uvloop

from runtime.api import keys
from runtime.api.app import create_app
from runtime.api.audit_post import AUDIT_BODY_VARIABLE, post_audit
from runtime.api.serving import ApiRunner
from runtime.api.settings import MIGRATIONS_DIR, ApiSettings
from runtime.common.keyring import KeyRingError
from runtime.common.logs import configure_logging
from runtime.common.migrations import MigrationError, load_migrations, migrate
from runtime.common.serve import (
    refuse_arguments,
    serve_until_stopped,
    usage_requested,
)
from runtime.common.settings import SettingsError

log = logging.getLogger("runtime.api")

USAGE = """usage: python -m runtime.api [serve|migrate|post-audit]

  serve       serve the API until SIGTERM, then drain (the default)
  migrate     apply the database schema's pending migrations and exit
  post-audit  post the audit entry in ORBIS_AUDIT_BODY to this container's running API;
              print its HTTP status (rotate-keys records each rotation this way)

Settings come from ORBIS_* environment variables (docs/architecture.md)."""


def _migrate(settings: ApiSettings) -> None:
    applied = uvloop.run(migrate(settings.database_conninfo, load_migrations(MIGRATIONS_DIR)))
    names = [f"{migration.version:04d}_{migration.name}" for migration in applied]
    log.info(
        "migrations applied" if names else "schema up to date", extra={"fields": {"applied": names}}
    )


# How long in-flight requests get to finish once the drain is over.
SHUTDOWN_TIMEOUT_SECONDS = 10.0


async def _serve(settings: ApiSettings) -> None:
    """Serve until SIGTERM/SIGINT, then drain: keep accepting and answering for
    `drain_seconds`, every answer closing its connection, then stop listening and let
    in-flight requests finish. A proxy's requests during a rolling restart are all answered:
    they arrive on connections that get an answer, or are refused before being sent."""
    app = create_app(settings)

    async def drain() -> None:
        log.info("draining", extra={"fields": {"seconds": settings.drain_seconds}})
        app[keys.DRAINING].set()
        await asyncio.sleep(settings.drain_seconds)

    runner = ApiRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
    )
    await serve_until_stopped(runner, settings, host=settings.host, port=settings.port, drain=drain)


def main(argv: list[str]) -> int:
    if usage_requested(argv, USAGE):
        return 0
    command = argv[0] if argv else "serve"
    if command not in ("serve", "migrate", "post-audit") or len(argv) > 1:
        return refuse_arguments(USAGE)
    try:
        settings = ApiSettings.from_env(os.environ)
        configure_logging(settings.log_level, service="api")
        if command == "migrate":
            _migrate(settings)
        elif command == "post-audit":
            print(post_audit(settings, os.environ.get(AUDIT_BODY_VARIABLE, "")))
        else:
            uvloop.run(_serve(settings))
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
