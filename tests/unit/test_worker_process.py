"""What the in-process worker tells its operator: failed attempts, unserved queues, bad targets."""

from __future__ import annotations

import logging
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.errors import ConfigError
from slayq.model import Lease, RunId, RunInfo, Transition
from slayq.runtime.retry import RetryPolicy
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Batch, ClaimRequest, QueueLimit
from slayq.worker import Worker
from slayq.worker.__main__ import load_client

FAST_RETRY = RetryPolicy(base=timedelta(milliseconds=10), cap=timedelta(milliseconds=20))


@asynccontextmanager
async def working(client: Client, **options: object) -> AsyncIterator[Worker]:
    worker = Worker(
        client, retry_policy=FAST_RETRY, poll_interval=timedelta(milliseconds=10), **options
    )
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        await worker.started.wait()
        yield worker
        worker.stop()


async def finished(client: Client, run_id: RunId | None) -> RunInfo:
    assert run_id is not None
    with anyio.fail_after(10):
        while True:
            run = await client.get_run(run_id)
            if run.status in ("completed", "failed", "cancelled"):
                return run
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_every_failed_attempt_is_logged_with_its_step_and_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @slayq.function(event="test/flaky", retries=1)
    async def flaky(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        def boom() -> None:
            raise RuntimeError(f"boom on attempt {ctx.attempt}")

        yield step.run("explode", boom)

    client = Client([flaky], store=MemoryStore())
    caplog.set_level(logging.WARNING, logger="slayq.worker")
    async with working(client):
        run = await finished(client, await client.send_event("test/flaky", {}))
    assert run.status == "failed"
    lines = [r for r in caplog.records if r.name == "slayq.worker.dispatcher"]
    messages = [r.getMessage() for r in lines]
    # The first cause is in the log even though the run keeps only the last error.
    assert any(
        "attempt 1/2 failed at step 'explode': RuntimeError: boom on attempt 1; will retry" in m
        for m in messages
    ), messages
    assert any(
        "attempt 2/2 failed at step 'explode': RuntimeError: boom on attempt 2; failed for good"
        in m
        for m in messages
    ), messages
    first = next(r for r in lines if "attempt 1/2" in r.getMessage())
    assert first.levelno == logging.WARNING
    assert (first.run_id, first.step, first.attempt) == (run.id, "explode", 1)  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_worker_warns_about_runs_due_in_a_queue_it_does_not_serve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @slayq.function(event="test/elsewhere", queue="elsewhere")
    async def elsewhere(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        return None

    client = Client([elsewhere], store=MemoryStore())
    await client.send_event("test/elsewhere", {})
    caplog.set_level(logging.WARNING, logger="slayq.worker")
    async with working(client, queues=[QueueLimit(names=["general"], concurrency=2)]):
        with anyio.fail_after(5):
            while True:
                if any("queue 'elsewhere'" in r.getMessage() for r in caplog.records):
                    break
                await anyio.sleep(0.01)
    warning = next(r for r in caplog.records if "queue 'elsewhere'" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert "1 run(s) are due" in warning.getMessage()


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "myjobs_for_worker_test.py").write_text(
        textwrap.dedent("""
            from slayq import Client
            from slayq.store.memory import MemoryStore

            client = Client([], store=MemoryStore())
            not_a_client = 42
        """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myjobs_for_worker_test"
    sys.modules.pop("myjobs_for_worker_test", None)


def test_a_misspelled_client_is_named_as_missing_with_the_clients_the_module_has(
    app_module: str,
) -> None:
    with pytest.raises(ConfigError, match=r"has no 'clint'; it has \['client'\]"):
        load_client(f"{app_module}:clint")


def test_a_target_that_is_not_a_client_says_what_it_is(app_module: str) -> None:
    with pytest.raises(ConfigError, match=r"'not_a_client' .* is a int, not a slayq\.Client"):
        load_client(f"{app_module}:not_a_client")
    assert isinstance(load_client(f"{app_module}:client"), Client)


@pytest.mark.anyio
async def test_a_takeover_is_logged_naming_the_holder_that_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @slayq.function(event="test/orphan")
    async def orphan(ctx: slayq.Context[slayq.EmptyEvent]) -> str:
        return "done"

    client = Client([orphan], store=MemoryStore())
    run_id = await client.send_event("test/orphan", {})
    # A worker that claims the run, then dies: its lease runs out unrenewed.
    await client.store.claim(
        queues=None, limit=1, lease_for=timedelta(milliseconds=1), owner="dead-host:99"
    )
    await anyio.sleep(0.01)
    caplog.set_level(logging.WARNING, logger="slayq.worker")
    async with working(client):
        run = await finished(client, run_id)
    assert (run.status, run.attempts) == ("completed", 2)
    (line,) = [r for r in caplog.records if "taken over" in r.getMessage()]
    assert "taken over from dead-host:99" in line.getMessage()
    assert "now attempt 2/26" in line.getMessage()
    assert line.levelno == logging.WARNING


@pytest.mark.anyio
async def test_grace_is_honoured_for_a_sync_handler_stuck_in_its_thread() -> None:
    release = threading.Event()
    started = threading.Event()

    def stuck() -> str:
        started.set()
        release.wait(10)  # a thread cannot be stopped: the drain must not wait for it
        return "late"

    @slayq.function(event="test/stuck")
    async def slow(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("stuck", stuck)

    client = Client([slow], store=MemoryStore())
    run_id = await client.send_event("test/stuck", {})
    assert run_id is not None
    try:
        worker = Worker(
            client, poll_interval=timedelta(milliseconds=10), grace=timedelta(milliseconds=200)
        )
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await anyio.to_thread.run_sync(started.wait, 5)
            began = anyio.current_time()
            worker.stop()
        drained_in = anyio.current_time() - began
        assert drained_in < 2, f"the drain waited {drained_in:.1f}s for the thread"
        run = await client.get_run(run_id)
        assert (run.status, run.attempts) == ("queued", 1)  # handed back, no attempt spent
    finally:
        release.set()


class SlowFirstCommit(MemoryStore):
    """Holds the first tick with commits until ``proceed``; notes commits and releases."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.committing = anyio.Event()
        self.proceed = anyio.Event()

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        if commits:
            self.committing.set()
            await self.proceed.wait()
        batch = await super().commit_batch(commits, claims=claims)
        self.events += ["committed"] * len(commits)
        return batch

    async def release(self, lease: Lease, **options: Any) -> None:
        self.events.append("released")
        await super().release(lease, **options)


async def at_once(value: int) -> int:
    return value  # an async handler that never suspends


@pytest.mark.anyio
@pytest.mark.parametrize("steps", [1, 2])
async def test_a_run_stopped_while_its_commit_is_in_flight_learns_how_it_ended_first(
    steps: int,
) -> None:
    """Shutdown's grace ends while a run's commit is in a tick: the run waits for the
    commit's outcome before its lease is handed back, instead of racing it. With two
    steps, the second runs without suspending before the stop lands: its commit is waited
    for too (the stop would otherwise land in that wait)."""

    @slayq.function(event="test/steps")
    async def stepping(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        for i in range(steps):
            yield step.run(f"s{i}", at_once, i)

    store = SlowFirstCommit()
    client = Client([stepping], store=store)
    run_id = await client.send_event("test/steps", {})
    # Without claiming ahead: a run then keeps its slot through its commits, and its second
    # step follows the first without suspending (claiming ahead, it waits for its slot
    # again, and the stop lands there, before the second step).
    worker = Worker(
        client, poll_interval=timedelta(milliseconds=10), grace=timedelta(0), claim_ahead=0
    )
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            await store.committing.wait()
            worker.stop()  # no grace: the run is stopped while its commit is in flight
            await anyio.sleep(0.05)
            store.proceed.set()
    assert store.events == ["committed"] * steps + ["released"]
    assert (await finished(client, run_id)).status == "completed"
