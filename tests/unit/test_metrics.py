"""The queue gauges, as the dispatcher refreshes them from one query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from slayq.telemetry.metrics import set_queue_gauges

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


def test_without_oldest_due_times_the_age_gauge_is_left_alone() -> None:
    set_queue_gauges({"gauge-c": 2}, None, now=NOW, known=set())
    assert gauge("slayq_queue_due", "gauge-c") == 2
    assert gauge("slayq_queue_oldest_due_age_seconds", "gauge-c") is None
