"""Why a run has not started: the words the operations API and the dashboard show.

Stores know what holds a run back (a full concurrency bucket, a throttle's next start);
this turns that into one line a person reads, the same from every store:
"waiting for a concurrency slot of customer_id=42 (2 of 2 running)",
"throttled until 2025-01-01 12:03:05Z", "collecting a batch: 37 of 100 events".
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any

from slayq.runtime.durations import short_duration
from slayq.runtime.flow import bucket_label

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from slayq.model import Flow, FlowSlot

# Statuses in which a run waits for its run_at to start (or resume).
_TIMED = ("queued", "sleeping", "waiting")


def held_back(
    *,
    event: str,
    status: str,
    run_at: datetime | None,
    data: dict[str, Any],
    flow: Flow | None,
    now: datetime,
    full: Sequence[tuple[FlowSlot, int]] = (),
    throttled_until: datetime | None = None,
) -> str | None:
    """What holds the run back, or None if nothing does (or it has no flow control).

    ``full`` lists the run's concurrency buckets that have no free slot, each with how
    many runs hold one; ``throttled_until`` is when its throttle lets it start."""
    if flow is None or status not in _TIMED or run_at is None:
        return None
    if run_at > now:
        if status != "queued":
            return None
        if flow.batch is not None:
            size = len(data.get("events", ()))
            return (
                f"collecting a batch: {size} of {flow.batch.max_size} events; starts at "
                f"{_clock(run_at)} or when full"
            )
        if flow.debounce is not None:
            return f"debounced: starts at {_clock(run_at)} unless another event comes first"
        return None
    reasons = [
        f"waiting for a concurrency slot of {bucket_label(event, slot.bucket)} "
        f"({holders} of {slot.limit} running)"
        for slot, holders in full
    ]
    if throttled_until is not None and throttled_until > now:
        reasons.append(f"throttled until {_clock(throttled_until)}")
    return "; ".join(reasons) or None


def _clock(when: datetime) -> str:
    """As the dashboard and the CLI show times: UTC to the second."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe_flow(event: str, flow: Flow | None) -> list[str]:
    """A run's flow controls, one line each: ``concurrency customer_id=42: 2 at once``."""
    if flow is None:
        return []

    def key(bucket: str) -> str:
        return bucket_label(event, bucket)

    lines = [f"concurrency {key(s.bucket)}: {s.limit} at once" for s in flow.concurrency]
    if flow.throttle is not None:
        t = flow.throttle
        burst = f", {t.burst} more at once" if t.burst else ""
        lines.append(f"throttle {key(t.bucket)}: a start every {short_duration(t.interval)}{burst}")
    if flow.rate_limit is not None:
        r = flow.rate_limit
        limit = r.burst + 1
        lines.append(
            f"rate limit {key(r.bucket)}: {limit} per {short_duration(r.interval * limit)}"
        )
    if flow.debounce is not None:
        d = flow.debounce
        most = f", at most {short_duration(d.timeout)} after the first" if d.timeout else ""
        lines.append(
            f"debounce {key(d.bucket)}: {short_duration(d.period)} after the last event{most}"
        )
    if flow.batch is not None:
        b = flow.batch
        lines.append(
            f"batch {key(b.bucket)}: up to {b.max_size} events or {short_duration(b.timeout)}"
        )
    if flow.singleton is not None:
        lines.append(f"singleton {key(flow.singleton.bucket)}: {flow.singleton.mode}")
    if flow.idempotency is not None:
        once = flow.idempotency
        lines.append(f"idempotency {key(once.bucket)}: for {short_duration(once.ttl)}")
    return lines
