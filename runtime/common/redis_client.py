"""The Redis client factory: a password-less URL plus the password from its secret file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis


@asynccontextmanager
async def open_redis(url: str, password: str | None) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(
        url, password=password, socket_timeout=5.0, socket_connect_timeout=5.0
    )
    try:
        yield client
    finally:
        await client.aclose()
