"""Periodic clean-up of rows that only ever expire: widget session tokens, refresh tokens.

Every API replica runs it; the deletes are idempotent, so replicas need no coordination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from runtime.api import keys
from runtime.common.db import Database

log = logging.getLogger("runtime.api.housekeeping")


async def purge_expired(db: Database) -> dict[str, int]:
    """Delete tokens long past expiry; returns how many rows of each kind went."""
    async with db.autocommit() as queries:
        widget_sessions = await queries.execute(
            "DELETE FROM widget_sessions WHERE expires_at < now() - interval '1 hour'"
        )
        # Expired a day ago: past any reuse that could still matter.
        refresh_tokens = await queries.execute(
            "DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'"
        )
    return {"widget_sessions": widget_sessions, "refresh_tokens": refresh_tokens}


async def housekeeping_task(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: purge on an interval until shutdown."""
    interval = app[keys.SETTINGS].purge_interval_seconds

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                purged = await purge_expired(app[keys.DB])
            except Exception:  # the next round retries; the service keeps serving
                log.exception("purging expired tokens failed")
            else:
                log.info("purged expired tokens", extra={"fields": purged})

    task = asyncio.create_task(loop(), name="orbis-api-housekeeping")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
