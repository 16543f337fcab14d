from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from slayq.runtime.clock import VirtualClock
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Store
from tests.pgbouncer import PgBouncer

EMBEDDED_PG = "--embedded-pg"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        EMBEDDED_PG,
        action="store_true",
        help="run every PostgreSQL test on an embedded PostgreSQL (slayq[embedded]) "
        "instead of SLAY_Q_TEST_DATABASE_URL",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption(EMBEDDED_PG):
        from tests import embedded_pg

        os.environ["SLAY_Q_TEST_DATABASE_URL"] = embedded_pg.admin_url()


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests import embedded_pg

    embedded_pg.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``embedded`` store variant runs for the contract tests marked
    ``embedded_smoke`` only (a smoke subset in every run); ``--embedded-pg`` runs every
    PostgreSQL variant on the embedded PostgreSQL instead. Deselected, not skipped."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        embedded = callspec is not None and callspec.params.get("store") == "embedded"
        if embedded and item.get_closest_marker("embedded_smoke") is None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2025, 3, 1, 12, 0, tzinfo=UTC))


@pytest.fixture(params=["memory", "postgres", "pgbouncer-batched", "embedded"])
async def store(request: pytest.FixtureRequest, clock: VirtualClock) -> AsyncIterator[Store]:
    """Every contract test runs on each store implementation, and on PostgreSQL a second
    time as the worker and the server use it: each ``commit`` through ``commit_batch``,
    through a PgBouncer in transaction mode (``?pooler=transaction``). The tests marked
    ``embedded_smoke`` run a third time on the embedded PostgreSQL (``slayq dev``'s)."""
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    from slayq.store.postgres import PostgresStore
    from tests import pgutil
    from tests.contract.batched import CommitsInBatches

    admin = None
    if request.param == "embedded":
        from tests import embedded_pg

        admin = embedded_pg.admin_url()
    url = await pgutil.fresh_database(admin)
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
        await pgutil.drop_database(url, admin)


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
