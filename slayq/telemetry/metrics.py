"""The ``slayq_*`` Prometheus metrics, recorded where each thing happens.

They live on ``prometheus_client``'s default registry, so ``/metrics`` on the server,
``--metrics-port`` on the worker, or the app's own exporter shows them. Labels are
``event`` (the function), ``queue``, ``status``, ``kind``, ``outcome``: never run ids.

The recording functions run on the hot path (every commit): each keeps the labelled
children it made in a dict, so a run costs a dict lookup and a lock per counter, no
allocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from slayq.model import Completed, Failed, Suspend

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime, timedelta

    from slayq.model import Claim, Transition

M = TypeVar("M", Counter, Gauge, Histogram)

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip


class _Family(Generic[M]):
    """A labelled metric whose children are made once per label values and kept."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.metric.labels(*labels)
        return child


RUNS_STARTED = _Family(
    Counter("slayq_runs_started", "Runs whose first attempt began (committed)", ["event", "queue"])
)
RUNS_FINISHED = _Family(
    Counter(
        "slayq_runs_finished",
        "Runs that finished, by status (completed, failed)",
        ["event", "queue", "status"],
    )
)
ATTEMPTS_FAILED = _Family(
    Counter("slayq_attempts_failed", "Failed attempts, retried or not", ["event", "queue"])
)
STEPS_EXECUTED = _Family(
    Counter(
        "slayq_steps_executed",
        "Steps executed (not answered from the memo), by kind",
        ["event", "kind"],
    )
)
STEPS_REPLAYED = _Family(
    Counter("slayq_steps_replayed", "Steps answered from the memo on replay", ["event"])
)
LEASES_EXPIRED = _Family(
    Counter(
        "slayq_leases_expired",
        "Runs taken over because their holder's lease ran out",
        ["event", "queue"],
    )
)
DELIVERIES = _Family(
    Counter(
        "slayq_deliveries",
        "Deliveries of runs to apps by the server, by outcome",
        ["event", "outcome"],
    )
)
STEP_DURATION = _Family(
    Histogram(
        "slayq_step_duration_seconds",
        "How long step handlers ran",
        ["event"],
        buckets=_LATENCY_BUCKETS,
    )
)
SCHEDULE_TO_START = _Family(
    Histogram(
        "slayq_run_schedule_to_start_seconds",
        "From when a run was due to when it was claimed",
        ["queue"],
        buckets=_LATENCY_BUCKETS,
    )
)
QUEUE_DUE = _Family(Gauge("slayq_queue_due", "Runs due and not claimed, per queue", ["queue"]))
QUEUE_OLDEST_DUE_AGE = _Family(
    Gauge(
        "slayq_queue_oldest_due_age_seconds",
        "How long the oldest due run of a queue has waited",
        ["queue"],
    )
)
RUNS_IN_FLIGHT = Gauge("slayq_runs_in_flight", "Runs this process holds a lease on")


def record_claim(claim: Claim, lease_for: timedelta) -> None:
    """A claim handed to this process: its lateness, and whether it was a takeover."""
    RUNS_IN_FLIGHT.inc()
    if claim.taken_over_from is not None:
        LEASES_EXPIRED(claim.event, claim.queue).inc()
        return  # its due time is the lost attempt's, not a schedule
    due_at = claim.due_at
    if due_at is not None:
        # The store's clock on both sides: the lease was granted at claim time.
        claimed_at = claim.lease.expires_at - lease_for
        late = (claimed_at - due_at).total_seconds()
        SCHEDULE_TO_START(claim.queue).observe(max(late, 0.0))


def record_release() -> None:
    """A claimed run is no longer held here."""
    RUNS_IN_FLIGHT.dec()


def record_commit(claim: Claim, transition: Transition, *, first: bool) -> None:
    """A transition committed for ``claim``; ``first``: the first commit of this claim."""
    event, queue = claim.event, claim.queue
    outcome = transition.outcome
    if first and claim.attempt == 1 and not claim.memo:
        RUNS_STARTED(event, queue).inc()
    for step in transition.steps:
        STEPS_EXECUTED(event, step.kind).inc()
    if isinstance(outcome, Suspend):
        for pending in outcome.pending:
            STEPS_EXECUTED(event, pending.kind).inc()
    if transition.replayed:
        STEPS_REPLAYED(event).inc(transition.replayed)
    if isinstance(outcome, Completed):
        RUNS_FINISHED(event, queue, "completed").inc()
    elif isinstance(outcome, Failed):
        ATTEMPTS_FAILED(event, queue).inc()
        if outcome.retry_after is None:
            RUNS_FINISHED(event, queue, "failed").inc()


def record_delivery(claim: Claim, outcome: str) -> None:
    """How one delivery by the server ended: ``delivered``, ``unreachable`` (no answer
    from the app, or it refused: no attempt spent), ``lost`` (the app got it, no usable
    answer came back) or ``refused`` (it can never be delivered)."""
    DELIVERIES(claim.event, outcome).inc()


def observe_step(event: str, seconds: float) -> None:
    STEP_DURATION(event).observe(seconds)


def set_queue_gauges(
    due: Mapping[str, int],
    oldest_due_at: Mapping[str, datetime | None],
    *,
    now: datetime,
    known: set[str],
) -> None:
    """Refresh the queue gauges; a queue seen before and not in ``due`` reads 0."""
    known.update(due)
    for queue in known:
        QUEUE_DUE(queue).set(due.get(queue, 0))
        oldest = oldest_due_at.get(queue)
        age = 0.0 if oldest is None or not due.get(queue) else (now - oldest).total_seconds()
        QUEUE_OLDEST_DUE_AGE(queue).set(max(age, 0.0))
