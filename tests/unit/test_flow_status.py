"""The line that says why a run has not started, as every store reports it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from slayq.model import Flow, FlowBatch, FlowRate, FlowSlot, FlowWindow
from slayq.runtime.flow_status import held_back

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SLOT = FlowSlot(bucket="sync customer_id=42", limit=2)


def test_a_due_run_in_a_full_bucket_waits_for_a_slot_of_that_key() -> None:
    flow = Flow(concurrency=[SLOT])
    assert (
        held_back(
            event="sync",
            status="queued",
            run_at=NOW,
            data={},
            flow=flow,
            now=NOW,
            full=[(SLOT, 2)],
        )
        == "waiting for a concurrency slot of customer_id=42 (2 of 2 running)"
    )


def test_a_throttled_run_says_until_when_and_both_reasons_show() -> None:
    flow = Flow(
        concurrency=[SLOT],
        throttle=FlowRate(bucket="sync", interval=timedelta(seconds=1), burst=0),
    )
    line = held_back(
        event="sync",
        status="queued",
        run_at=NOW,
        data={},
        flow=flow,
        now=NOW,
        full=[(SLOT, 2)],
        throttled_until=NOW + timedelta(minutes=3, seconds=5),
    )
    assert line == (
        "waiting for a concurrency slot of customer_id=42 (2 of 2 running); "
        "throttled until 2025-01-01 12:03:05Z"
    )


def test_batches_and_debounces_say_what_they_collect_and_when_they_start() -> None:
    later = NOW + timedelta(seconds=5)
    batch = Flow(batch=FlowBatch(bucket="b", max_size=100, timeout=timedelta(seconds=5)))
    assert (
        held_back(
            event="b",
            status="queued",
            run_at=later,
            data={"events": [{}] * 37},
            flow=batch,
            now=NOW,
        )
        == "collecting a batch: 37 of 100 events; starts at 2025-01-01 12:00:05Z or when full"
    )
    debounce = Flow(debounce=FlowWindow(bucket="d", period=timedelta(seconds=5)))
    assert (
        held_back(event="d", status="queued", run_at=later, data={}, flow=debounce, now=NOW)
        == "debounced: starts at 2025-01-01 12:00:05Z unless another event comes first"
    )


def test_nothing_holds_back_a_run_without_flow_a_running_one_or_a_free_one() -> None:
    flow = Flow(concurrency=[SLOT])
    assert held_back(event="s", status="queued", run_at=NOW, data={}, flow=None, now=NOW) is None
    assert held_back(event="s", status="running", run_at=NOW, data={}, flow=flow, now=NOW) is None
    assert held_back(event="s", status="queued", run_at=NOW, data={}, flow=flow, now=NOW) is None
    # a sleeping run with flow control is not held back by it until it is due
    later = NOW + timedelta(minutes=1)
    assert (
        held_back(event="s", status="sleeping", run_at=later, data={}, flow=flow, now=NOW) is None
    )


def test_each_control_reads_as_one_line_with_its_key() -> None:
    from slayq.model import FlowOnce, FlowSingleton
    from slayq.runtime.flow_status import describe_flow

    flow = Flow(
        concurrency=[SLOT],
        throttle=FlowRate(bucket="sync", interval=timedelta(seconds=1), burst=5),
        rate_limit=FlowRate(bucket="sync customer_id=42", interval=timedelta(hours=1), burst=3),
        debounce=FlowWindow(
            bucket='sync doc="d"', period=timedelta(minutes=5), timeout=timedelta(minutes=30)
        ),
        singleton=FlowSingleton(bucket="sync user_id=7", mode="cancel"),
        idempotency=FlowOnce(bucket='sync order_id="o-1"', ttl=timedelta(hours=24)),
    )
    assert describe_flow("sync", flow) == [
        "concurrency customer_id=42: 2 at once",
        "throttle (all runs): a start every 1s, 5 more at once",
        "rate limit customer_id=42: 4 per 4h",
        'debounce doc="d": 5m after the last event, at most 30m after the first',
        "singleton user_id=7: cancel",
        'idempotency order_id="o-1": for 1d',
    ]
    batch = Flow(batch=FlowBatch(bucket="b", max_size=100, timeout=timedelta(seconds=5)))
    assert describe_flow("b", batch) == ["batch (all runs): up to 100 events or 5s"]
    assert describe_flow("b", None) == []
