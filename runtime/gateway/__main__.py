"""`python -m runtime.gateway`: serve widget calls until SIGTERM, then drain."""

from __future__ import annotations

import os
import sys

import uvloop
from aiohttp import web

from runtime.common.logs import configure_logging
from runtime.common.serve import (
    refuse_arguments,
    serve_until_stopped,
    usage_requested,
)
from runtime.common.settings import SettingsError
from runtime.gateway import keyprobe
from runtime.gateway.app import create_app
from runtime.gateway.keys import GATEWAY
from runtime.gateway.settings import GatewaySettings

USAGE = """usage: python -m runtime.gateway [serve|probe-key]

  serve      serve widget calls until SIGTERM, then drain them to other instances (the default)
  probe-key  open one Live session with the key in ORBIS_PROBE_GEMINI_KEY; print `accepted`
             or `refused: <why>` (rotate-keys asks this before a gateway uses a new key)

Settings come from ORBIS_* environment variables (docs/architecture.md)."""


async def serve(settings: GatewaySettings) -> None:
    app = create_app(settings)

    async def drain() -> None:
        # Still listening: /readyz answers 503 and new calls are turned away with a retry
        # hint, so the load balancer moves traffic before the socket goes.
        await app[GATEWAY].drain(grace_seconds=settings.drain_timeout_seconds)

    await serve_until_stopped(
        web.AppRunner(app, handle_signals=False, access_log=None),
        settings,
        host=settings.host,
        port=settings.port,
        freeze_gc=True,
        drain=drain,
    )


def main(argv: list[str]) -> int:
    if usage_requested(argv, USAGE):
        return 0
    command = argv[0] if argv else "serve"
    if command not in ("serve", "probe-key") or len(argv) > 1:
        return refuse_arguments(USAGE)
    if command == "probe-key":
        return keyprobe.main(os.environ)
    try:
        settings = GatewaySettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, service="gateway")
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
