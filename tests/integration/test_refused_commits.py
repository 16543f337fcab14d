"""A transition the database refuses becomes a failed attempt with the real error.

What a run answers is not always what this engine produced: an app of another version, or
a bug, can answer the server with a value PostgreSQL cannot hold. Before, the dispatcher
treated the refused commit as a crash: the run stayed ``running`` until its lease ran out,
its handler ran again on every attempt, and it ended ``LeaseExpired`` with the real error
only in a log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import anyio
import pytest

from slayq.model import (
    Claim,
    Completed,
    PendingStep,
    RunId,
    RunInfo,
    StepRecord,
    Suspend,
    Transition,
)
from slayq.runtime.driver import Commit
from slayq.store.postgres import PostgresStore
from slayq.worker.dispatcher import Dispatcher
from tests.contract.helpers import start

pytestmark = pytest.mark.anyio

Answer = Callable[[Claim], Transition]


@asynccontextmanager
async def dispatching(url: str, answer: Answer) -> AsyncIterator[tuple[PostgresStore, list[int]]]:
    """A dispatcher whose executor commits ``answer(claim)``, as the server commits what an
    app answers; yields the store and the attempts executed."""
    store = PostgresStore(url)
    attempts: list[int] = []

    async def execute(claim: Claim, commit: Commit) -> None:
        attempts.append(claim.attempt)
        await commit(claim.lease, answer(claim))

    dispatcher = Dispatcher(store, execute, poll_interval=timedelta(milliseconds=20))
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(dispatcher.run)
            await dispatcher.started.wait()
            yield store, attempts
            dispatcher.stop()
    finally:
        await store.aclose()


async def settled(store: PostgresStore, run_id: RunId, done: Callable[[RunInfo], bool]) -> RunInfo:
    with anyio.fail_after(10):
        while True:
            run = await store.get_run(run_id)
            if done(run):
                return run
            await anyio.sleep(0.02)


def steps_then_done(*records: StepRecord) -> Answer:
    return lambda claim: Transition(steps=list(records), outcome=Completed("done"))


@pytest.mark.parametrize(
    ("answer", "step", "reason"),
    [
        pytest.param(
            steps_then_done(StepRecord(name="bad\x00name", kind="run", output=1)),
            "bad\x00name",
            "NUL",
            id="nul-in-step-name",
        ),
        pytest.param(
            lambda claim: Transition(
                steps=[],
                outcome=Suspend(
                    [PendingStep(name="nap", kind="sleep", delay=timedelta(days=99_999_999))]
                ),
            ),
            "nap",
            "before the year 10000",
            id="sleep-out-of-range",
        ),
    ],
)
async def test_a_refused_commit_fails_the_run_for_good_with_the_real_error(
    pg_url: str, answer: Answer, step: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with dispatching(pg_url, answer) as (store, attempts):
        run_id = await start(store, max_attempts=3)
        run = await settled(store, run_id, lambda r: r.status in ("failed", "completed"))
    assert run.status == "failed"
    assert run.error is not None
    assert run.error.type == "StoreInputError"
    assert run.error.step == step
    assert reason in run.error.message
    assert run.steps == []  # nothing of the refused transition was applied
    # Refused values are refused again: no second attempt runs the handler again.
    assert attempts == [1]
    failures = [r for r in caplog.records if "failed for good" in r.getMessage()]
    assert failures
    assert failures[0].levelno == logging.WARNING
    assert getattr(failures[0], "run_id", None) == run_id
