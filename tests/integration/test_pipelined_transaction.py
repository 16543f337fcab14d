"""``pipelined_transaction``: BEGIN and COMMIT as statements of the pipeline, against a
real PostgreSQL. What it must keep of ``conn.transaction()``: all or nothing, whether a
statement or the body fails, the connection idle afterwards, and no commit of its own
inside the caller's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import pq

from slayq.store.postgres._transaction import pipelined_transaction

pytestmark = pytest.mark.anyio


@pytest.fixture
async def conn(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("create table scratch (n int primary key)")
        yield conn


async def rows(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    cursor = await conn.execute("select n from scratch order by n")
    return [n for (n,) in await cursor.fetchall()]


async def test_commits_the_statements_and_reads_their_results_after(
    conn: psycopg.AsyncConnection[Any], pg_url: str
) -> None:
    async with pipelined_transaction(conn):
        await conn.execute("insert into scratch values (1)")
        cursor = await conn.execute("insert into scratch values (2) returning n * 10")
    assert await cursor.fetchone() == (20,)
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        assert await rows(other) == [1, 2]


async def test_a_failing_statement_rolls_back_what_came_before_it(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    async def twice() -> None:
        async with pipelined_transaction(conn):
            await conn.execute("insert into scratch values (1)")
            await conn.execute("insert into scratch values (1)")
            await conn.execute("insert into scratch values (3)")

    with pytest.raises(psycopg.errors.UniqueViolation):
        await twice()
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await rows(conn) == []


async def test_a_failing_body_rolls_back(conn: psycopg.AsyncConnection[Any]) -> None:
    class BodyFailed(Exception):
        pass

    async def failing() -> None:
        async with pipelined_transaction(conn) as pipeline:
            await conn.execute("insert into scratch values (1)")
            await pipeline.sync()
            raise BodyFailed

    with pytest.raises(BodyFailed):
        await failing()
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE
    assert await rows(conn) == []


async def test_inside_a_transaction_it_leaves_the_commit_to_the_caller(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    async with conn.transaction(force_rollback=True):
        async with pipelined_transaction(conn):
            await conn.execute("insert into scratch values (1)")
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        assert await rows(conn) == [1]
    assert await rows(conn) == []
