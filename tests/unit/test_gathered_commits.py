"""With ``gather``, a tick waits (a bounded time) for the other runs in flight to commit.

The server delivers the runs of one claim together, and their answers come back spread
over a few milliseconds: without waiting, the first answer took a tick (a transaction)
alone and the next ones queued behind it. ``Dispatcher(gather=...)`` lets a tick wait for
every run in flight to queue its commit while answers keep coming no more than
``gather`` apart, and ``GATHER_AT_MOST`` times ``gather`` in all; the worker does not
wait.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import anyio
import pytest

import slayq
from slayq.client import Client
from slayq.model import Claim, Completed, Lease, Transition
from slayq.runtime.driver import Commit
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Batch, ClaimRequest, QueueLimit
from slayq.worker.dispatcher import GATHER_AT_MOST, Dispatcher

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))


class BatchSizes(MemoryStore):
    """Notes how many commits each tick carried."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        if commits:
            self.sizes.append(len(commits))
        return await super().commit_batch(commits, claims=claims)


@slayq.function(event="t/answer")
async def answer(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
    return None


async def run_two(gather: timedelta, second_after: float) -> tuple[list[int], float]:
    """Two runs claimed together, answering ``second_after`` seconds apart; the batch
    sizes, and how long the first answer waited for its commit."""
    store = BatchSizes()
    client = Client([answer], store=store)
    await client.send_events([("t/answer", {}), ("t/answer", {})])
    first_waited = 0.0
    answered = committed = 0
    both_committed = anyio.Event()

    async def execute(claim: Claim, commit: Commit) -> None:
        nonlocal answered, committed, first_waited
        answered += 1
        if answered == 1:
            began = anyio.current_time()
            await commit(claim.lease, DONE)
            first_waited = anyio.current_time() - began
        else:
            await anyio.sleep(second_after)
            await commit(claim.lease, DONE)
        committed += 1
        if committed == 2:
            both_committed.set()

    dispatcher = Dispatcher(
        store, execute, queues=[QueueLimit(["general"], 2)], gather=gather, retention=None
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(dispatcher.run)
            await both_committed.wait()
            dispatcher.stop()
    return store.sizes, first_waited


async def test_with_gather_the_answers_of_one_claim_commit_in_one_tick() -> None:
    sizes, _waited = await run_two(timedelta(milliseconds=200), second_after=0.02)
    assert sizes == [2]


async def test_without_gather_the_first_answer_commits_alone() -> None:
    sizes, _waited = await run_two(timedelta(0), second_after=0.02)
    assert sizes == [1, 1]


async def test_a_tick_waits_no_longer_than_gather_for_a_slow_run() -> None:
    sizes, waited = await run_two(timedelta(milliseconds=20), second_after=0.5)
    assert sizes == [1, 1]
    assert 0.015 <= waited < 0.3


async def run_spread(gather: timedelta, runs: int, gap: float) -> list[int]:
    """``runs`` runs claimed together, each answering ``gap`` seconds after the one
    before (chained, not timed from the start: a stalled event loop cannot bunch the
    answers up); the batch sizes."""
    store = BatchSizes()
    client = Client([answer], store=store)
    await client.send_events([("t/answer", {})] * runs)
    started = committed = 0
    all_committed = anyio.Event()
    answered = [anyio.Event() for _ in range(runs)]

    async def execute(claim: Claim, commit: Commit) -> None:
        nonlocal started, committed
        nth = started
        started += 1
        if nth > 0:
            await answered[nth - 1].wait()
            await anyio.sleep(gap)
        answered[nth].set()  # the next one's gap starts as this one's commit queues
        await commit(claim.lease, DONE)
        committed += 1
        if committed == runs:
            all_committed.set()

    dispatcher = Dispatcher(
        store, execute, queues=[QueueLimit(["general"], runs)], gather=gather, retention=None
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(dispatcher.run)
            await all_committed.wait()
            dispatcher.stop()
    return store.sizes


async def test_a_tick_waits_while_answers_keep_coming_within_gather() -> None:
    """Four answers 30 ms apart take 90 ms in all, longer than gather (50 ms), but none
    is more than 50 ms after the one before: one tick. (A bound on the whole wait made
    it two ticks or more: the answers after the first 50 ms committed on their own.)"""
    sizes = await run_spread(timedelta(milliseconds=50), runs=4, gap=0.03)
    assert sizes == [4]


async def test_a_tick_waits_no_longer_than_gather_at_most_times_gather() -> None:
    gather = timedelta(milliseconds=20)
    runs = 2 * GATHER_AT_MOST + 2  # answers 15 ms apart: longer in all than the bound
    sizes = await run_spread(gather, runs=runs, gap=0.015)
    assert len(sizes) >= 2
    assert sizes[0] < runs
    assert sum(sizes) == runs
