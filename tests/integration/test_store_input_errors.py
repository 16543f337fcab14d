"""Values PostgreSQL refuses are input errors, and change nothing (issue 7, defect 2).

A refusal caused by the input (a key too long to index, a NUL in a text column, a time
out of range) fails again on every retry: it must not read as "the database cannot be
reached" (``StoreUnavailableError``), which callers retry forever.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Literal

import msgspec
import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from slayq.errors import RunNotFoundError, StoreError, StoreInputError, StoreUnavailableError
from slayq.model import (
    Completed,
    Flow,
    FlowSlot,
    NewRun,
    PendingStep,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.store.postgres import PostgresStore
from slayq.store.postgres._errors import is_conflict, translated
from tests.contract.helpers import LEASE, claim_one, new_run, start, starting

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(pg_url) as store:
        yield store


async def test_a_key_too_long_to_index_is_refused_as_input(pg_store: PostgresStore) -> None:
    fine = new_run(event="a")
    # Random, so that compression cannot squeeze it under the index's limit.
    doomed = new_run(event="a", key=secrets.token_urlsafe(2250)[:3000])
    with pytest.raises(StoreInputError, match=r"send events: .*index row size"):
        await pg_store.send_events([starting(fine), starting(doomed)])
    for run in (fine, doomed):
        with pytest.raises(RunNotFoundError):
            await pg_store.get_run(run.id)


async def _refused_commit_changes_nothing(
    store: PostgresStore, transition: Transition, match: str
) -> None:
    run_id = await start(store)
    claim = await claim_one(store)
    before = await store.get_run(run_id)
    with pytest.raises(StoreInputError, match=match):
        await store.commit(claim.lease, transition)
    assert await store.get_run(run_id) == before
    # Still held by its claimer, who can commit something else.
    assert [lease.token for lease in await store.extend_leases([claim.lease], LEASE)] == [
        claim.lease.token
    ]
    await store.commit(claim.lease, Transition(steps=[], outcome=Completed("ok")))
    assert (await store.get_run(run_id)).status == "completed"


async def test_a_step_name_with_a_nul_is_refused_as_input(pg_store: PostgresStore) -> None:
    steps = [StepRecord(name="fetch\u0000", kind="run", output=1)]
    transition = Transition(steps=steps, outcome=Completed(None))
    await _refused_commit_changes_nothing(pg_store, transition, r"commit run .*NUL")


async def test_a_step_name_too_long_to_index_is_refused_as_input(
    pg_store: PostgresStore,
) -> None:
    steps = [StepRecord(name=secrets.token_urlsafe(2250)[:3000], kind="run", output=1)]
    transition = Transition(steps=steps, outcome=Completed(None))
    await _refused_commit_changes_nothing(pg_store, transition, r"commit run .*index row size")


async def test_a_sleep_past_the_databases_range_is_refused_as_input(
    pg_store: PostgresStore,
) -> None:
    nap = PendingStep(name="nap", kind="sleep", delay=timedelta(days=999_999_999))
    transition = Transition(steps=[], outcome=Suspend([nap]))
    await _refused_commit_changes_nothing(pg_store, transition, r"commit run .*out of range")


async def test_a_wait_past_the_databases_range_is_refused_as_input(
    pg_store: PostgresStore,
) -> None:
    """The transactional commit path (a wait), not the one-statement one (a sleep)."""
    wait = PendingStep(name="w", kind="wait", event="e", delay=timedelta(days=999_999_999))
    transition = Transition(steps=[], outcome=Suspend([wait]))
    await _refused_commit_changes_nothing(pg_store, transition, r"commit run .*out of range")


@pytest.mark.parametrize("kind", ["sleep", "wait"])
async def test_a_time_past_the_year_9999_is_refused_though_the_database_could_hold_it(
    pg_store: PostgresStore, kind: Literal["sleep", "wait"]
) -> None:
    """PostgreSQL stores times up to 294276 AD, Python's datetime ends with 9999: such a
    run would break every later claim and wake-up query that reads it back."""
    later = PendingStep(
        name="later",
        kind=kind,
        event="e" if kind == "wait" else None,
        delay=timedelta(days=99_999_999),
    )
    transition = Transition(steps=[], outcome=Suspend([later]))
    await _refused_commit_changes_nothing(pg_store, transition, r"before the year 10000")
    assert await pg_store.next_wakeup() is None  # readable: nothing past 9999 was kept


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            pg_errors.lookup("22001")("value too long for type character varying(3)"),
            StoreInputError,
        ),
        (pg_errors.lookup("22P05")("unsupported Unicode escape sequence"), StoreInputError),
        (pg_errors.lookup("54001")("stack depth limit exceeded"), StoreInputError),
        (
            psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
            StoreInputError,
        ),
        (pg_errors.lookup("57P01")("terminating connection"), StoreUnavailableError),
        (psycopg.OperationalError("connection refused"), StoreUnavailableError),
        (PoolTimeout("couldn't get a connection after 30 sec"), StoreUnavailableError),
        (pg_errors.lookup("40P01")("deadlock detected"), StoreError),
        (pg_errors.lookup("40001")("could not serialize access"), StoreError),
        (pg_errors.lookup("42P01")("relation does not exist"), StoreError),
    ],
)
def test_errors_are_classified_by_sqlstate_class(
    error: psycopg.Error, expected: type[StoreError]
) -> None:
    with pytest.raises(StoreError) as raised, translated("do it"):
        raise error
    assert type(raised.value) is expected
    assert raised.value.__cause__ is error
    assert str(raised.value).startswith("do it: ")


def test_deadlocks_and_serialization_failures_are_conflicts_to_run_again() -> None:
    assert is_conflict(pg_errors.lookup("40P01")("deadlock detected"))
    assert is_conflict(pg_errors.lookup("40001")("could not serialize access"))
    assert not is_conflict(pg_errors.lookup("57P01")("terminating connection"))


async def test_event_data_with_a_nul_is_refused_as_input(pg_store: PostgresStore) -> None:
    """The client refuses it first; the store, which matches event data in SQL, too."""
    run = new_run(event="a", data={"text": "x\u0000y"})
    with pytest.raises(StoreInputError, match=r"send events: .*\\u0000"):
        await pg_store.send_events([starting(run)])
    with pytest.raises(RunNotFoundError):
        await pg_store.get_run(run.id)


def _with_a_nul(where: str) -> NewRun:
    """A run holding a NUL in one of its JSON values."""
    run = new_run(event="a")
    if where == "data":
        return msgspec.structs.replace(run, data={"text": "x\u0000y"})
    if where == "trace":
        return msgspec.structs.replace(run, trace={"traceparent": "00-\u0000"})
    flow = Flow(concurrency=[FlowSlot(bucket="a k=\u0000", limit=1)])
    return msgspec.structs.replace(run, flow=flow)


@pytest.mark.parametrize("where", ["data", "trace", "flow"])
@pytest.mark.parametrize("batch", [False, True], ids=["alone", "in-a-batch"])
async def test_a_nul_in_any_json_value_of_a_run_is_refused_alone_as_in_a_batch(
    pg_store: PostgresStore, batch: bool, where: str
) -> None:
    """A lone run takes its own statement (``INSERT_QUIET_RUN``): it must refuse what the
    batch statement refuses, in its data, its trace context or its flow keys."""
    run = _with_a_nul(where)
    events = [starting(run), starting(new_run(event="b"))] if batch else [starting(run)]
    with pytest.raises(StoreInputError, match=r"send events: .*\\u0000"):
        await pg_store.send_events(events)
    with pytest.raises(RunNotFoundError):
        await pg_store.get_run(run.id)
