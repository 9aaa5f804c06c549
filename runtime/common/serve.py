"""The one serve loop of the runtime services' `python -m runtime.<service>`.

Listen, run until SIGTERM or SIGINT, let the service drain (each has its own way), then stop
listening and let in-flight requests finish (the runner's shutdown timeout).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from runtime.common.settings import RuntimeSettings

log = logging.getLogger("runtime.serve")


def usage_requested(argv: list[str], usage: str) -> bool:
    """True (after printing `usage` on stdout) when argv asks for help."""
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return True
    return False


def refuse_arguments(usage: str) -> int:
    """What `main` returns for arguments it does not know: usage on stderr, exit 2."""
    print(usage, file=sys.stderr)
    return 2


async def serve_until_stopped(
    runner: web.AppRunner,
    settings: RuntimeSettings,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool | None = None,
    freeze_gc: bool = False,
    on_listening: Callable[[], None] = lambda: None,
    drain: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve `runner`'s app on host:port until a stop signal, then `drain()` while still
    listening (a load balancer or proxy moves traffic before the socket goes), then clean up.

    Once listening, one log line gives the port and the settings the service runs with:
    secrets show as stars, and fields kept out of repr() (a database URL) are left out.

    `freeze_gc`: what start-up made (importing google-genai's types alone makes ~80k objects)
    lives as long as the process; keep it out of the cyclic GC's full collections, each tens
    of milliseconds that stall every call or session.
    """
    await runner.setup()
    try:
        if freeze_gc:
            gc.freeze()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port)
        await site.start()
        hidden = {name for name, field in type(settings).model_fields.items() if not field.repr}
        log.info(
            "listening",
            extra={
                "fields": {
                    "port": runner.addresses[0][1],
                    "settings": settings.model_dump(mode="json", exclude=hidden),
                }
            },
        )
        on_listening()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        if drain is not None:
            await drain()
    finally:
        await runner.cleanup()
