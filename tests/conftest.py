from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from slayq.runtime.clock import VirtualClock
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Store


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["memory", "postgres", "postgres-batched"])
async def store(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Store]:
    """Every contract test runs on each store implementation; "postgres-batched" makes
    each ``commit`` through ``commit_batch``, the path the worker and the server take."""
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    from slayq.store.postgres import PostgresStore
    from tests import pgutil
    from tests.contract.batched import CommitsInBatches

    url = await pgutil.fresh_database()
    kind = CommitsInBatches if request.param == "postgres-batched" else PostgresStore
    pg = kind(url, clock=clock)
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
