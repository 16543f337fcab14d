"""Claiming ahead: a worker without a cluster-wide limit claims runs beyond its slots,
which start as slots free up (a run waiting for its commit lends its slot); by default
only as many as would start soon; a limit is never claimed beyond; stopping hands back
what has not started."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.model import Lease, RunStatus, Transition
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Batch, ClaimRequest, QueueLimit
from slayq.worker import Worker, dispatcher


class Named(msgspec.Struct):
    name: str


class Gate:
    """A function whose runs wait for ``opened``; ``started`` counts the handlers begun."""

    def __init__(self) -> None:
        self.opened = anyio.Event()
        self.started = 0

        @slayq.function(event="test/gated")
        async def gated(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
            yield step.run("wait", self.wait)

        self.function = gated

    async def wait(self) -> None:
        self.started += 1
        await self.opened.wait()


@asynccontextmanager
async def working(client: Client, **options: Any) -> AsyncIterator[Worker]:
    worker = Worker(client, poll_interval=timedelta(milliseconds=10), **options)
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        await worker.started.wait()
        yield worker
        worker.stop()


async def count(client: Client, status: RunStatus) -> int:
    return len((await client.list_runs(status=status, limit=100)).runs)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(10):
        while True:
            if await condition():
                return
            await anyio.sleep(0.01)


async def at_least(client: Client, status: RunStatus, n: int) -> None:
    async def reached() -> bool:
        return await count(client, status) >= n

    await until(reached)


async def settled(client: Client, gate: Gate, started: int, running: int) -> None:
    """Wait until ``started`` handlers began and ``running`` runs are claimed; then a
    while longer, to see that no more are."""

    async def reached() -> bool:
        return gate.started >= started and await count(client, "running") >= running

    await until(reached)
    await anyio.sleep(0.2)


@pytest.mark.anyio
@pytest.mark.parametrize(("ahead", "claimed"), [(3, 5), (0, 2)])
async def test_runs_are_claimed_ahead_of_the_slots_and_start_as_slots_free_up(
    ahead: int, claimed: int
) -> None:
    """Two slots, ``ahead`` runs claimed beyond them."""
    gate = Gate()
    client = Client([gate.function], store=MemoryStore())
    ids = [await client.send_event("test/gated", {}) for _ in range(8)]
    async with working(client, concurrency=2, claim_ahead=ahead):
        await settled(client, gate, started=2, running=claimed)
        assert gate.started == 2
        assert await count(client, "running") == claimed
        assert await count(client, "queued") == 8 - claimed
        gate.opened.set()
        await at_least(client, "completed", 8)
    assert gate.started == 8
    assert {(await client.get_run(i)).status for i in ids if i is not None} == {"completed"}


@pytest.mark.anyio
async def test_stopping_hands_back_at_once_the_runs_claimed_ahead() -> None:
    """The runs no slot took go back to the queue when the worker stops, unstarted and
    without waiting for the run in the slot; that run drains and completes."""
    gate = Gate()
    client = Client([gate.function], store=MemoryStore())
    for _ in range(3):
        await client.send_event("test/gated", {})
    async with working(client, concurrency=1, claim_ahead=2, grace=timedelta(seconds=10)) as w:
        await settled(client, gate, started=1, running=3)
        w.stop()
        await at_least(client, "queued", 2)
        assert await count(client, "running") == 1  # the started run drains meanwhile
        gate.opened.set()
    assert gate.started == 1
    assert await count(client, "completed") == 1
    assert await count(client, "queued") == 2


@pytest.mark.anyio
async def test_a_cluster_wide_limit_is_not_claimed_ahead() -> None:
    gate = Gate()
    client = Client([gate.function], store=MemoryStore())
    for _ in range(6):
        await client.send_event("test/gated", {})
    limit = [QueueLimit(names=["general"], concurrency=2)]
    async with working(client, queues=limit):
        await settled(client, gate, started=2, running=2)
        assert await count(client, "running") == 2
        gate.opened.set()
    with pytest.raises(ValueError, match="claim_ahead is for a worker without queue limits"):
        Worker(client, queues=limit, claim_ahead=1)
    with pytest.raises(ValueError, match="claim_ahead must be 0 or more, not -1"):
        Worker(client, claim_ahead=-1)


class HeldCommits(MemoryStore):
    """Holds every tick with commits until ``proceed``."""

    def __init__(self) -> None:
        super().__init__()
        self.proceed = anyio.Event()

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        if commits:
            await self.proceed.wait()
        return await super().commit_batch(commits, claims=claims)


@pytest.mark.anyio
@pytest.mark.parametrize(("ahead", "begun"), [(1, 2), (0, 1)])
async def test_a_run_waiting_for_its_commit_lets_a_run_claimed_ahead_use_its_slot(
    ahead: int, begun: int
) -> None:
    """One slot: while the first run's commit is held, the run claimed ahead starts."""
    gate = Gate()
    gate.opened.set()  # the handlers return at once; their commits are held
    store = HeldCommits()
    client = Client([gate.function], store=store)
    for _ in range(2):
        await client.send_event("test/gated", {})
    async with working(client, concurrency=1, claim_ahead=ahead):
        await anyio.sleep(0.3)  # time for the run claimed ahead to begin, if it may
        assert gate.started == begun
        store.proceed.set()
        await at_least(client, "completed", 2)


@pytest.mark.anyio
async def test_no_more_handlers_run_at_once_than_the_slots() -> None:
    """Runs claimed ahead, steps whose commits free the slot: still two handlers at most."""
    running = peak = 0

    async def busy(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.002)
        running -= 1
        return i

    @slayq.function(event="test/steps")
    async def stepping(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for i in range(5):
            yield step.run(f"s{i}", busy, i)

    client = Client([stepping], store=MemoryStore())
    for _ in range(12):
        await client.send_event("test/steps", {})
    async with working(client, concurrency=2, claim_ahead=4):
        await at_least(client, "completed", 12)
    assert peak == 2


@pytest.mark.anyio
@pytest.mark.parametrize(("wait", "claimed"), [(1.0, 6), (0.01, 2)])
async def test_by_default_only_runs_that_start_soon_are_claimed_ahead(
    wait: float, claimed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots, at most four ahead by default: after runs of ~50 ms, a run claimed
    ahead starts within 1 s (all four are), not within 10 ms (none is)."""
    monkeypatch.setattr(dispatcher, "AHEAD_WAIT", wait)
    gate = Gate()

    @slayq.function(event="test/quick")
    async def quick(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("nap", anyio.sleep, 0.05)

    client = Client([gate.function, quick], store=MemoryStore())
    for _ in range(2):
        await client.send_event("test/quick", {})
    async with working(client, concurrency=2):
        await at_least(client, "completed", 2)  # how long runs take is known now
        for _ in range(8):
            await client.send_event("test/gated", {})
        await settled(client, gate, started=2, running=claimed)
        assert await count(client, "running") == claimed
        gate.opened.set()
        await at_least(client, "completed", 10)


def test_how_many_are_claimed_ahead_follows_how_long_runs_take() -> None:
    group = dispatcher._Group(None, slots=10, ahead=20, adaptive=True)
    assert group.ahead_now() == 0  # no run has ended: nothing to go by
    group.ran(0.005)
    assert group.ahead_now() == 20  # 2,000 would start within a second: the bound
    group.run_seconds = 1.0
    assert group.ahead_now() == 10
    group.run_seconds = 60.0
    assert group.ahead_now() == 0
    group.ran(0.0)  # a moving average: one quick run does not undo the slow ones
    assert group.run_seconds == 48.0
    assert dispatcher._Group(None, slots=10, ahead=3).ahead_now() == 3  # fixed


@pytest.mark.anyio
async def test_a_run_claimed_ahead_keeps_its_lease_while_it_waits() -> None:
    """It waits longer than its lease behind a slow run: the heartbeat extends it, and
    it runs once, on its first attempt; a second worker finds nothing to take over."""
    started: list[str] = []

    async def slow(name: str) -> str:
        started.append(name)
        await anyio.sleep(1.0 if name == "first" else 0)
        return name

    @slayq.function(event="test/slow", schema=Named)
    async def slowly(ctx: slayq.Context[Named]) -> slayq.Workflow:
        yield step.run("slow", slow, ctx.data.name)

    client = Client([slowly], store=MemoryStore())
    first = await client.send_event("test/slow", {"name": "first"})
    second = await client.send_event("test/slow", {"name": "second"})
    lease = {"lease_for": timedelta(milliseconds=300)}
    async with working(client, concurrency=1, claim_ahead=1, **lease):
        await until(lambda: _running(client, 2))
        async with working(client, concurrency=2, claim_ahead=0, **lease):
            await at_least(client, "completed", 2)
    runs = [await client.get_run(i) for i in (first, second) if i is not None]
    assert [(r.status, r.attempts) for r in runs] == [("completed", 1), ("completed", 1)]
    assert started == ["first", "second"]


async def _running(client: Client, n: int) -> bool:
    return await count(client, "running") >= n
