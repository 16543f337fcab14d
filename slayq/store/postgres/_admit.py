"""Send-time flow control: what each event's run becomes before the batch is ingested.

Idempotency, rate limits, singletons, debounce and batching are decided when an event is
sent, in the sending transaction. ``admit`` first takes a transaction-scoped advisory
lock on every flow bucket of the batch (sorted, so two senders never wait on each other
in a cycle); every statement after it sees whatever an earlier holder of those buckets
committed, so concurrent senders are decided one after another, exactly. Then each
feature, in ``FEATURES`` order, looks at the runs still to start and may:

- answer an event with an existing run and start nothing (idempotency, singleton skip,
  a debounce or batch run the event joined): ``Admission.drop(i, run_id)``;
- start nothing and answer None (rate limit): ``Admission.drop(i, None)``;
- leave the run to start, maybe changed (``Admission.replace``), or act on other runs
  (singleton cancel).

The event itself is ingested whatever happens to its run: it is still logged, still
wakes waits and still cancels runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.store.postgres import _flow_batch, _flow_debounce
from slayq.store.postgres import _queries as q

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncPipeline

    from slayq.model import NewRun, OutgoingEvent, RunId


class Admission:
    """The batch as the features leave it: ``events`` to ingest, and per event index
    the id to answer instead of its new run's. ``channel`` is the store's, for features
    that make runs due (their queues' listeners are told)."""

    def __init__(self, events: Sequence[OutgoingEvent], *, channel: str) -> None:
        self.events = list(events)
        self.channel = channel
        self.answers: dict[int, RunId | None] = {}

    def pending(self) -> list[tuple[int, NewRun]]:
        """The runs still to start, with their event's index."""
        return [(i, e.run) for i, e in enumerate(self.events) if e.run is not None]

    def drop(self, index: int, answer: RunId | None) -> None:
        """Start no run for event ``index``; ``send_events`` answers ``answer`` for it."""
        self.events[index] = msgspec.structs.replace(self.events[index], run=None)
        self.answers[index] = answer

    def replace(self, index: int, run: NewRun) -> None:
        self.events[index] = msgspec.structs.replace(self.events[index], run=run)

    def answer(self, ids: Sequence[RunId | None]) -> list[RunId | None]:
        """``send_events``' answer: the ingested runs' ids, the features' where they gave one."""
        return [self.answers.get(i, run_id) for i, run_id in enumerate(ids)]


Feature = Callable[
    ["AsyncConnection[Any]", "AsyncPipeline", Admission, "datetime | None"], Awaitable[None]
]

# Filled in feature by feature (idempotency, rate limit, singleton, debounce, batch), each
# a module of its own: (name, the buckets of a run it decides on, its decision).
FEATURES: list[tuple[str, Callable[[NewRun], list[str]], Feature]] = []
# Debounce and batch last: an event the others answer joins no burst or batch.
FEATURES += [
    ("debounce", _flow_debounce.buckets, _flow_debounce.decide),
    ("batch", _flow_batch.buckets, _flow_batch.decide),
]


def decided_at_send(events: Sequence[OutgoingEvent]) -> bool:
    """Whether any run of the batch has a send-time flow control (then ``admit`` it)."""
    return any(e.run is not None and e.run.flow is not None and _buckets(e.run) for e in events)


async def admit(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    events: Sequence[OutgoingEvent],
    *,
    now: datetime | None,
    channel: str,
) -> Admission:
    """Lock the batch's flow buckets, then let each feature decide (see the module doc)."""
    admission = Admission(events, channel=channel)
    names = sorted({b for e in events if e.run is not None for b in _buckets(e.run)})
    if names:
        lock = {"ns": q.FLOW_LOCKS, "names": names, "exclusive": [True] * len(names)}
        await conn.execute(q.LOCK_NAMES, lock)
    for _, _, decide in FEATURES:
        if any(e.run is not None and e.run.flow is not None for e in admission.events):
            await decide(conn, pipeline, admission, now)
    return admission


def _buckets(run: NewRun) -> list[str]:
    """The lock names of a run's send-time buckets: feature name, then the bucket."""
    if run.flow is None:
        return []
    return [f"{name}:{bucket}" for name, buckets, _ in FEATURES for bucket in buckets(run)]
