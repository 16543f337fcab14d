"""Metrics the dispatcher records: the queue gauges, lease takeovers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest
from prometheus_client import REGISTRY

import slayq
from slayq import step
from slayq.client import Client
from slayq.store.memory import MemoryStore
from slayq.telemetry.metrics import set_queue_gauges
from slayq.worker import Worker

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)


def gauge(name: str, queue: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"queue": queue})


def test_queue_gauges_show_due_runs_and_the_oldest_ones_age() -> None:
    known: set[str] = set()
    oldest = {"gauge-a": NOW - timedelta(seconds=90), "gauge-b": None}
    set_queue_gauges({"gauge-a": 3}, oldest, now=NOW, known=known)
    assert gauge("slayq_queue_due", "gauge-a") == 3
    assert gauge("slayq_queue_oldest_due_age_seconds", "gauge-a") == 90
    # Drained: a queue seen before reads 0 instead of keeping its last value.
    set_queue_gauges({}, {}, now=NOW, known=known)
    assert gauge("slayq_queue_due", "gauge-a") == 0
    assert gauge("slayq_queue_oldest_due_age_seconds", "gauge-a") == 0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.anyio
async def test_a_takeover_counts_an_expired_lease_and_not_a_new_start() -> None:
    @slayq.function(event="metrics/taken-over")
    async def taken_over(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("only", lambda: 1)

    labels = {"event": "metrics/taken-over", "queue": "general"}
    before = {
        name: sample(name, **labels)
        for name in ("slayq_leases_expired_total", "slayq_runs_started_total")
    }
    client = Client([taken_over], store=MemoryStore())
    run_id = await client.send_event("metrics/taken-over")
    assert run_id is not None
    # A process claims it and dies: its lease runs out.
    await client.store.claim(
        queues=None, limit=1, lease_for=timedelta(milliseconds=20), owner="crashed"
    )
    await anyio.sleep(0.05)
    worker = Worker(client, poll_interval=timedelta(milliseconds=10))
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        with anyio.fail_after(10):
            while True:
                if (await client.get_run(run_id)).status == "completed":
                    break
                await anyio.sleep(0.01)
        worker.stop()
    assert (
        sample("slayq_leases_expired_total", **labels) - before["slayq_leases_expired_total"] == 1
    )
    # Its attempt 2 is not a start: attempt 1 began in the crashed process.
    assert sample("slayq_runs_started_total", **labels) == before["slayq_runs_started_total"]
    assert sample("slayq_runs_finished_total", status="completed", **labels) == 1
    assert sample("slayq_runs_in_flight") == 0


@pytest.mark.anyio
async def test_steps_answered_from_the_memo_count_as_replayed() -> None:
    @slayq.function(event="metrics/replayed")
    async def replayed(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        yield step.run("one", lambda: 1)
        yield step.run("two", lambda: 2)
        yield step.sleep("nap", "10ms")  # resumes by replaying "one" and "two"
        yield step.run("three", lambda: 3)

    before = sample("slayq_steps_replayed_total", event="metrics/replayed")
    client = Client([replayed], store=MemoryStore())
    run_id = await client.send_event("metrics/replayed")
    assert run_id is not None
    worker = Worker(client, poll_interval=timedelta(milliseconds=10))
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        with anyio.fail_after(10):
            while True:
                if (await client.get_run(run_id)).status == "completed":
                    break
                await anyio.sleep(0.01)
        worker.stop()
    # After the sleep: "one", "two" and the sleep itself are answered from the memo.
    assert sample("slayq_steps_replayed_total", event="metrics/replayed") - before == 3
