"""The runtime's Redis client on a real Redis: a rotated-out password fails at once, a dropped
connection is still retried."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis

from runtime.common.redis_client import open_redis

pytestmark = pytest.mark.integration


def _with_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def acl_user(redis_url: str) -> tuple[str, str]:
    """An ACL user with one password; returns the url (password-less) and the password."""
    user, password = f"rot-{time.monotonic_ns()}", "first-password"
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys="*", commands=["+@all"])
    admin.close()
    return _with_user(redis_url, user), password


async def test_a_rotated_out_password_fails_at_once(
    acl_user: tuple[str, str], redis_url: str
) -> None:
    url, password = acl_user
    async with open_redis(url, password) as client:
        assert await client.ping()
        user = str(urlsplit(url).username)
        admin = redis.Redis.from_url(redis_url)
        admin.acl_setuser(user, enabled=True, passwords=["+second-password", f"-{password}"])
        admin.client_kill_filter(user=user)  # its connection must log in again
        admin.close()
        started = time.monotonic()
        with pytest.raises(aioredis.AuthenticationError):
            await client.ping()
        # redis-py's default policy retries a refused login with backoff for seconds.
        assert time.monotonic() - started < 0.5


async def test_a_dropped_connection_is_retried(acl_user: tuple[str, str], redis_url: str) -> None:
    url, password = acl_user
    async with open_redis(url, password) as client:
        assert await client.ping()
        admin = redis.Redis.from_url(redis_url)
        assert admin.client_kill_filter(user=urlsplit(url).username) == 1
        admin.close()
        assert await client.ping()
