"""A replay on PostgreSQL sees exactly what the first run saw (issue 7, defect 1).

jsonb re-sorts object keys and rewrites numbers (``1e22`` as an integer, ``-0.0`` as
``0``); a function that iterates a step's dict then meets its steps in another order on
the next attempt. Values are compared by their encoding: ``-0.0 == 0.0`` and dicts
compare without order, so equality would let the defect through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import make_conninfo

import slayq
from slayq import step
from slayq.model import Claim, Completed, Continue, StepRecord, Transition
from slayq.runtime.ids import new_run_id
from slayq.store.postgres import PostgresStore
from slayq.store.protocol import QueueLimit
from tests.contract.helpers import LEASE, start
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio


async def test_a_function_looping_over_a_step_dict_survives_a_retry(pg_url: str) -> None:
    @slayq.function(event="shop/order", retries=2)
    async def order_all(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        # Not sorted: jsonb would hand the replay "pear" before "apple".
        prices = yield step.run("prices", lambda: {"pear": 3, "fig": -0.0, "apple": 1e22})
        placed = []
        for name in prices:
            placed.append((yield step.run(f"order-{name}", lambda n=name: n.upper())))
        if ctx.attempt == 1:
            raise RuntimeError("the shop was down")
        yield slayq.finish(placed)

    async with running(PostgresStore(pg_url), [order_all]) as client:
        run = await finished(client, await client.send_event("shop/order"))
    assert (run.status, run.attempts) == ("completed", 2), run.error
    assert run.result == ["PEAR", "FIG", "APPLE"]
    assert [s.name for s in run.steps] == ["prices", "order-pear", "order-fig", "order-apple"]


# -- the property: any step output comes back exactly ----------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([2**63 - 1, -(2**63), 2**64, 1e22, -0.0, 0.0, 5e-324, 1.7976931348623157e308])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()  # NULs, surrogate-free unicode, escapes: all of it
)
outputs = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    """One database for every example of a property: each example starts a run of its own."""
    async with PostgresStore(pg_url) as store:
        yield store


def _exact(value: Any) -> bytes:
    return msgspec.json.encode(value)


async def _claim(store: PostgresStore, queue: str) -> Claim:
    (claim,) = await store.claim(
        queues=[QueueLimit(names=[queue], concurrency=1)], limit=1, lease_for=LEASE, owner="w"
    )
    return claim


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.dictionaries(st.text(max_size=6), outputs, max_size=5), output=outputs, result=outputs
)
async def test_a_replay_sees_exactly_what_the_first_run_saw(
    pg_store: PostgresStore, data: dict[str, Any], output: Any, result: Any
) -> None:
    # Event data never holds a NUL: the client refuses it (it would be matched in SQL).
    data = msgspec.json.decode(msgspec.json.encode(data).replace(b"\\u0000", b""))
    queue = f"q-{new_run_id()}"  # each example claims its own run, even after a failure
    run_id = await start(pg_store, data=data, queue=queue)
    first = await _claim(pg_store, queue)
    assert _exact(first.data) == _exact(data)
    record = StepRecord(name="step", kind="run", output=output)
    await pg_store.commit(first.lease, Transition(steps=[record], outcome=Continue()))
    await pg_store.release(first.lease)

    replay = await _claim(pg_store, queue)
    assert [_exact(s.output) for s in replay.memo] == [_exact(output)]
    assert _exact(replay.data) == _exact(data)
    await pg_store.commit(replay.lease, Transition(steps=[], outcome=Completed(result)))
    run = await pg_store.get_run(run_id)
    assert (_exact(run.data), _exact(run.result)) == (_exact(data), _exact(result))
    assert [_exact(s.output) for s in run.steps] == [_exact(output)]


async def test_migrating_keeps_the_values_stored_as_jsonb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database from before 0003_exact_json, with a run in flight, migrates in place."""
    from psycopg import sql

    from slayq.store.postgres import _migrations, migrate
    from tests import pgutil

    name = f"slayq_t_{new_run_id().replace('-', '')[-12:]}"
    url = make_conninfo(pgutil.admin_url(), dbname=name)
    async with await psycopg.AsyncConnection.connect(pgutil.admin_url(), autocommit=True) as admin:
        await admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        everything = _migrations.load_migrations()
        # A database from before 0003 has none of the migrations after it either (0007
        # indexes data::jsonb, which on a jsonb column is an index on the column itself).
        before = [m for m in everything if m.version < 3]
        monkeypatch.setattr(_migrations, "load_migrations", lambda: before)
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("set search_path = slayq")
            await conn.execute(
                "insert into runs (id, event, data, queue, max_attempts, created_at, updated_at,"
                " run_at, result) values (gen_random_uuid(), 'old', %s::jsonb, 'general', 3,"
                " now(), now(), now(), %s::jsonb)",
                ['{"b": 1, "a": [1.5, "x"]}', '"done"'],
            )
        monkeypatch.setattr(_migrations, "load_migrations", lambda: everything)
        assert (await migrate(url))[0] == "0003_exact_json"
        async with PostgresStore(url) as store:
            (claim,) = await store.claim(queues=None, limit=1, lease_for=LEASE, owner="w")
            # jsonb had already sorted the keys: that order is what the run has seen.
            assert _exact(claim.data) == _exact({"a": [1.5, "x"], "b": 1})
            assert (await store.get_run(claim.lease.run_id)).result == "done"
    finally:
        await pgutil.drop_database(url)
