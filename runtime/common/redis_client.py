"""The Redis client factory: a password-less URL plus the password from its secret file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError

T = TypeVar("T")

# redis-py 8's own defaults: up to 10 retries, jittered backoff from 10 ms up to 1 s.
RETRIES = 10
BACKOFF_BASE_SECONDS = 0.01
BACKOFF_CAP_SECONDS = 1.0


class TransientRetry(Retry):
    """Retries dropped connections and timeouts, but not a refused login.

    redis-py's `AuthenticationError` is a `ConnectionError`, so its default policy retries a
    wrong password with backoff (seconds per command). A password the server no longer accepts
    (a rotated-out one) will not start working on retry: it fails at once instead.
    """

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            if isinstance(error, AuthenticationError):
                return False
            return is_retryable is None or is_retryable(error)

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


def transient_retry() -> TransientRetry:
    return TransientRetry(
        ExponentialWithJitterBackoff(base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS), RETRIES
    )


@asynccontextmanager
async def open_redis(url: str, password: str | None) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(
        url,
        password=password,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        retry=transient_retry(),
    )
    try:
        yield client
    finally:
        await client.aclose()
