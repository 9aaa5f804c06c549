"""The test servers themselves: real PostgreSQL 15 and Redis 7 with a named ACL user."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.services import PostgresServer, RedisServer

pytestmark = pytest.mark.integration


def test_postgres_is_real_and_version_15(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    assert 150000 <= int(row[0]) < 160000


def test_postgres_refuses_a_wrong_password(pg_server: PostgresServer) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_server.conninfo(password="wrong-password"), connect_timeout=5)


def test_redis_default_user_is_off(redis_srv: RedisServer) -> None:
    anonymous = redis.Redis(host=redis_srv.host, port=redis_srv.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()
    assert redis_srv.client().ping() is True
