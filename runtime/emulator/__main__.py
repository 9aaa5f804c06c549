"""`python -m runtime.emulator`: serve the Gemini Live emulator over TLS.

Prints one JSON line `{"event": "listening", "port": N}` on stdout once it accepts connections,
so a parent process (tests, benchmarks) can use port 0 and learn the real port.
"""

from __future__ import annotations

import json
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
from runtime.emulator.app import create_app, server_ssl_context
from runtime.emulator.scenario import ScenarioError
from runtime.emulator.settings import EmulatorSettings

USAGE = """usage: python -m runtime.emulator

Serves the Gemini Live emulator over TLS until SIGTERM.
Settings come from ORBIS_EMULATOR_* environment variables (docs/emulator.md)."""


async def serve(settings: EmulatorSettings) -> None:
    runner = web.AppRunner(create_app(settings), shutdown_timeout=5.0, handle_signals=False)

    def listening() -> None:
        port = runner.addresses[0][1]
        print(json.dumps({"event": "listening", "port": port}), flush=True)

    await serve_until_stopped(
        runner,
        settings,
        host=settings.host,
        port=settings.port,
        ssl_context=server_ssl_context(settings),
        reuse_port=settings.reuse_port or None,
        freeze_gc=True,
        on_listening=listening,
    )


def main(argv: list[str]) -> int:
    if usage_requested(argv, USAGE):
        return 0
    if argv:
        return refuse_arguments(USAGE)
    try:
        settings = EmulatorSettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"emulator: invalid or missing settings: {', '.join(exc.variables)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, service="emulator")
    try:
        uvloop.run(serve(settings))
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
