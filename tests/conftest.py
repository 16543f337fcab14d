from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from slayq.runtime.clock import VirtualClock
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Store
from tests.pgbouncer import PgBouncer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["memory", "postgres", "pgbouncer-batched"])
async def store(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Store]:
    """Every contract test runs on each store implementation, and on PostgreSQL a second
    time as the worker and the server use it: each ``commit`` through ``commit_batch``,
    through a PgBouncer in transaction mode (``?pooler=transaction``)."""
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    from slayq.store.postgres import PostgresStore
    from tests import pgutil
    from tests.contract.batched import CommitsInBatches

    url = await pgutil.fresh_database()
    if request.param == "pgbouncer-batched":
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        pg: PostgresStore = CommitsInBatches(bouncer.url(url, pooler=True), clock=clock)
    else:
        pg = PostgresStore(url, clock=clock)
    await pg.open()
    try:
        yield pg
    finally:
        await pg.aclose()
        await pgutil.drop_database(url)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test."""
    from tests import pgutil

    url = await pgutil.fresh_database()
    try:
        yield url
    finally:
        await pgutil.drop_database(url)


@pytest.fixture(scope="session")
def pgbouncer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the test PostgreSQL, for the session."""
    from tests.pgutil import admin_url

    bouncer = PgBouncer(admin_url(), tmp_path_factory.mktemp("pgbouncer"))
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
