"""Access tokens revoked before they expire: a deny-list in Redis, checked on every request.

An access token (JWT) carries its id (`jti`) and its login session's refresh-token family
(`fam`). Logout deny-lists the presented access token's id until that token expires, and the
family for one access-token lifetime (every access token the session was issued expires
within it); a refresh token presented twice deny-lists its family the same way. Each
authenticated request then costs one `MGET` of the two keys (docs/benchmarks.md measures it).

When Redis is unreachable the check lets the token through, logged, as the rate limiter does:
a revoked token then works until it expires (at most `access_token_seconds`), and the API stays
up. Logout itself refuses (503) rather than answer that a token is revoked when it is not.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from runtime.api.errors import Unavailable

log = logging.getLogger("runtime.api.revocation")

PREFIX = "orbis:revoked"


def token_key(jti: str) -> str:
    return f"{PREFIX}:jti:{jti}"


def family_key(family_id: str) -> str:
    return f"{PREFIX}:family:{family_id}"


class Revocations:
    def __init__(self, redis: aioredis.Redis, *, access_token_seconds: int) -> None:
        self._redis = redis
        self._access_token_seconds = access_token_seconds

    async def revoke(
        self, *, jti: str | None, expires_at: int | None, family_id: str | None
    ) -> None:
        """Deny-list a token until `expires_at` (unix seconds) and/or a family for one access
        token lifetime. Raises Unavailable when Redis cannot record it."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if jti is not None and expires_at is not None:
                    # EXAT: the entry goes when the token would have; +1 s covers rounding.
                    pipe.set(token_key(jti), b"1", exat=expires_at + 1)
                if family_id is not None:
                    pipe.set(family_key(family_id), b"1", ex=self._access_token_seconds + 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("token revocation not recorded", extra={"fields": {"error": str(exc)}})
            raise Unavailable(
                "could not revoke the access token; retry",
                code="revocation_unavailable",
                headers={"Retry-After": "5"},
            ) from None

    async def revoke_family_quietly(self, family_id: str) -> None:
        """As `revoke` for a family, when the caller answers with its own error anyway."""
        # Logged by revoke; the family's refresh tokens are revoked in the database either way.
        with contextlib.suppress(Unavailable):
            await self.revoke(jti=None, expires_at=None, family_id=family_id)

    async def is_revoked(self, *, jti: str | None, family_id: str | None) -> bool:
        keys = [token_key(jti)] if jti is not None else []
        if family_id is not None:
            keys.append(family_key(family_id))
        if not keys:
            return False  # a token issued before tokens carried ids; it expires soon
        try:
            found = await self._redis.mget(keys)
        except (RedisError, OSError) as exc:
            log.warning("revocation check unavailable", extra={"fields": {"error": str(exc)}})
            return False
        return any(value is not None for value in found)
