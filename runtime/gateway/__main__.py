"""`python -m runtime.gateway`: serve widget calls until SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

import uvloop
from aiohttp import web

from runtime.common.logs import configure_logging
from runtime.common.settings import SettingsError
from runtime.gateway.app import create_app
from runtime.gateway.keys import GATEWAY
from runtime.gateway.settings import GatewaySettings

log = logging.getLogger("runtime.gateway")


async def serve(settings: GatewaySettings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    # What start-up made (importing google-genai's types alone makes ~80k objects) lives as long as the
    # process: keep it out of the cyclic GC's full collections, each ~50 ms that stall every call.
    gc.freeze()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info(
        "gateway listening",
        extra={"fields": {"port": settings.port, "instance_id": settings.instance_id}},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        # Keep listening while draining: /readyz answers 503 and new calls are turned away
        # with a retry hint, so the load balancer moves traffic before the socket goes.
        await app[GATEWAY].drain(grace_seconds=settings.drain_timeout_seconds)
    finally:
        await runner.cleanup()


def main() -> None:
    try:
        settings = GatewaySettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, service="gateway")
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
