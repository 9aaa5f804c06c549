"""`python -m runtime.emulator`: serve the Gemini Live emulator over TLS.

Prints one JSON line `{"event": "listening", "port": N}` on stdout once it accepts connections,
so a parent process (tests, benchmarks) can use port 0 and learn the real port.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sys

import uvloop
from aiohttp import web
from pydantic import ValidationError

from runtime.common.logs import configure_logging
from runtime.emulator.app import create_app, server_ssl_context
from runtime.emulator.scenario import ScenarioError
from runtime.emulator.settings import EmulatorSettings


async def serve(settings: EmulatorSettings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=5.0, handle_signals=False)
    await runner.setup()
    # What start-up made lives as long as the process: keep it out of the cyclic GC's full
    # collections (tens of ms each, stalling every session).
    gc.freeze()
    site = web.TCPSite(
        runner,
        settings.host,
        settings.port,
        ssl_context=server_ssl_context(settings),
        reuse_port=settings.reuse_port or None,
    )
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"event": "listening", "port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    try:
        settings = EmulatorSettings()
    except ValidationError as exc:
        missing = ", ".join(
            "ORBIS_EMULATOR_" + str(error["loc"][0]).upper() for error in exc.errors()
        )
        print(f"emulator: invalid or missing settings: {missing}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, service="emulator")
    try:
        uvloop.run(serve(settings))
    except (ScenarioError, OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
