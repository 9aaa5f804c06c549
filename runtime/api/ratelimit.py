"""Fixed-window rate limiting in Redis: one counter per (scope, identity, minute).

A window counter is one INCR and one EXPIRE per request; it admits at most twice the limit
across a window boundary, which is acceptable for abuse protection. When Redis is down the
limiter lets requests through (logged): availability of the product beats strictness here.
"""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from runtime.api.errors import RateLimited

log = logging.getLogger("runtime.api.ratelimit")


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, hits: Counter, *, window_seconds: int = 60) -> None:
        self._redis = redis
        self._hits = hits
        self.window_seconds = window_seconds

    async def check(self, scope: str, identity: str, limit: int) -> None:
        """Count one request; raise RateLimited (429, Retry-After) past `limit` per window."""
        now = time.time()
        window = int(now // self.window_seconds)
        key = f"orbis:rl:{scope}:{identity}:{window}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window_seconds + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable", extra={"fields": {"error": str(exc)}})
            return
        if int(count) > limit:
            self._hits.labels(scope).inc()
            retry_after = max(1, math.ceil((window + 1) * self.window_seconds - now))
            raise RateLimited(
                f"too many requests; retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
