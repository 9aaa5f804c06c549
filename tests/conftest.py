"""Session-wide real servers: one PostgreSQL cluster and one Redis server per test run.

Each test that needs a database gets a fresh one (`database_url`), and each Redis user of
the suite gets its own logical database number (`redis_url`), so tests do not share state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.services import PostgresServer, RedisServer, postgres_server, redis_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server; dropped afterwards."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


_redis_db_numbers = itertools.cycle(range(1, 16))


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> Iterator[str]:
    """A flushed logical Redis database for this test."""
    db = next(_redis_db_numbers)
    client = redis_srv.client(db)
    client.flushdb()
    yield redis_srv.url(db)
    client.flushdb()
    client.close()
