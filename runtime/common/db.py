"""PostgreSQL access: the psycopg async pool and a small timed query wrapper (the schema's
migrations are runtime/common/migrations.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, LiteralString

import psycopg
from prometheus_client import Histogram
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

Row = dict[str, Any]
Params = Sequence[Any] | dict[str, Any] | None


class Queries:
    """Queries on one connection (in a transaction or autocommitting, as the caller opened
    it), each timed into the query-latency histogram."""

    def __init__(self, conn: psycopg.AsyncConnection[DictRow], timer: Histogram) -> None:
        self.conn = conn
        self._timer = timer

    async def one(self, sql: LiteralString, params: Params = None) -> Row | None:
        started = time.perf_counter()
        cursor = await self.conn.execute(sql, params)
        row = await cursor.fetchone()
        self._timer.observe(time.perf_counter() - started)
        return row

    async def all(self, sql: LiteralString, params: Params = None) -> list[Row]:
        started = time.perf_counter()
        cursor = await self.conn.execute(sql, params)
        rows = await cursor.fetchall()
        self._timer.observe(time.perf_counter() - started)
        return rows

    async def execute(self, sql: LiteralString, params: Params = None) -> int:
        """Run a statement; returns the number of rows it touched."""
        started = time.perf_counter()
        cursor = await self.conn.execute(sql, params)
        self._timer.observe(time.perf_counter() - started)
        return cursor.rowcount


class Database:
    def __init__(
        self, pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]], timer: Histogram
    ) -> None:
        self.pool = pool
        self._timer = timer

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self.pool.connection() as conn, conn.transaction():
            yield Queries(conn, self._timer)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Queries]:
        """Each statement commits on its own: one round trip for a lone read (no BEGIN and
        COMMIT), for statements that need no atomicity together."""
        async with self.pool.connection() as conn:
            yield Queries(conn, self._timer)


@asynccontextmanager
async def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 10, wait_seconds: float = 5.0
) -> AsyncIterator[AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]]:
    """A pool whose connections return rows as dicts; it opens without waiting for the
    database, so the service starts and reports not-ready until PostgreSQL answers."""
    pool = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        # Autocommit connections: `Database.transaction()` opens transactions explicitly.
        kwargs={"row_factory": dict_row, "autocommit": True},
        connection_class=psycopg.AsyncConnection[DictRow],
        # How long a request waits for a connection before failing (503, not a hang).
        timeout=wait_seconds,
    )
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()
