"""Send-time flow control: what each event's run becomes before the batch is ingested.

Idempotency, rate limits, singletons, debounce and batching are decided when an event is
sent, in the sending transaction (``send_events``, or the commit of a run that sends),
in one pipelined round trip before the ingest's:

1. Lock every flow bucket of the batch with a transaction-scoped advisory lock (sorted,
   so two senders never wait on each other in a cycle). Every statement after it sees
   whatever an earlier holder of those buckets committed, so concurrent senders are
   decided one after another, exactly.
2. Read: the store's clock, the runs that already hold the batch's per-send keys, and
   what each feature (``FEATURES``) asks for. Then one sync.
3. Decide: a repeated keyed send answers its run and no feature sees it (a retried send
   must not cancel its own run or spend a rate). Then each feature, in order, goes over
   the runs still to start, event by event, and may:

   - answer an event with an existing run and start nothing (idempotency, singleton skip,
     a debounce or batch run the event joined): ``Admission.drop(i, run_id)``, or the
     run of an earlier event of the batch: ``Admission.follow(i, j)``;
   - start nothing and answer None (rate limit): ``Admission.drop(i, None)``;
   - leave the run to start, maybe changed (``Admission.replace``), queue its writes, or
     leave a step for after the ingest (``Admission.after_ingest``: singleton cancels
     and idempotency answers need the batch's runs to exist).

The caller then ingests ``Admission.events`` and calls ``Admission.finish``. The event
itself is ingested whatever happens to its run: it is still logged, still wakes waits
and still cancels runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.model import RunId
from slayq.store.postgres import (
    _flow_batch,
    _flow_debounce,
    _flow_idempotency,
    _flow_rate_limit,
    _flow_singleton,
)
from slayq.store.postgres.sql.common import CLOCK, FLOW_LOCKS, LOCK_NAMES
from slayq.store.postgres.sql.sending import KEYED_RUNS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncPipeline

    from slayq.model import NewRun, OutgoingEvent


# A statement (or several) queued once the batch is ingested.
Step = Callable[["AsyncConnection[Any]"], Awaitable[None]]


class Admission:
    """The batch as the features leave it: ``events`` to ingest, and per event index
    the id to answer instead of its new run's. ``now`` is the store's clock, read with
    the features' reads (so it is set when they decide); ``channel`` is the store's, for
    features that make runs due (their queues' listeners are told); ``pipeline`` the
    transaction's, for features that need a result before they can decide."""

    def __init__(
        self, events: Sequence[OutgoingEvent], *, channel: str, pipeline: AsyncPipeline
    ) -> None:
        self.events = list(events)
        self.pipeline = pipeline
        self.channel = channel
        self.now: datetime
        self._answers: dict[int, RunId | None] = {}
        self._follows: dict[int, int] = {}
        self._after: list[Step] = []

    def pending(self) -> list[tuple[int, NewRun]]:
        """The runs still to start, with their event's index."""
        return [(i, e.run) for i, e in enumerate(self.events) if e.run is not None]

    def buckets(self, feature: str) -> list[str]:
        """The buckets of ``feature`` (a field of ``model.Flow``) of the runs still to
        start, sorted, each once."""
        return sorted({b for _, run in self.pending() if (b := bucket_of(run, feature))})

    def drop(self, index: int, answer: RunId | None) -> None:
        """Start no run for event ``index``; ``send_events`` answers ``answer`` for it."""
        self.events[index] = msgspec.structs.replace(self.events[index], run=None)
        self._answers[index] = answer

    def follow(self, index: int, leader: int) -> None:
        """Start no run for event ``index``; answer it as event ``leader`` (an earlier
        event of the batch) is answered, whatever the features go on to decide for it."""
        self.drop(index, None)
        self._follows[index] = leader

    def replace(self, index: int, run: NewRun) -> None:
        self.events[index] = msgspec.structs.replace(self.events[index], run=run)

    def outcome(self, index: int) -> RunId | None:
        """The id event ``index`` is answered with, as the features decided so far."""
        index = self._leader(index)
        run = self.events[index].run
        return run.id if run is not None else self._answers.get(index)

    def after_ingest(self, step: Step) -> None:
        """Queue ``step`` to run in the same transaction once the batch is ingested."""
        self._after.append(step)

    async def finish(self, conn: AsyncConnection[Any]) -> None:
        """Queue the statements the features left for after the ingest."""
        for step in self._after:
            await step(conn)

    def answer(self, ids: Sequence[RunId | None]) -> list[RunId | None]:
        """``send_events``' answer: the ingested runs' ids, the features' where they gave one."""
        answers: list[RunId | None] = []
        for i in range(len(ids)):
            leader = self._leader(i)
            answers.append(self._answers[leader] if leader in self._answers else ids[leader])
        return answers

    def _leader(self, index: int) -> int:
        while index in self._follows:
            index = self._follows[index]
        return index


# A feature's second half: it decides once the reads arrived, and queues its writes.
Decide = Callable[[], Awaitable[None]]
# A feature queues the reads it needs for the runs still to start and returns how it
# decides; None if no run of the batch uses it.
Feature = Callable[["AsyncConnection[Any]", Admission], Awaitable[Decide | None]]

# A feature that reads what it needs only once the features before it have decided
# (which runs are still to start), in a round trip of its own.
Late = Callable[["AsyncConnection[Any]", "AsyncPipeline", Admission, "datetime"], Awaitable[None]]


def _deciding_late(decide: Late) -> Feature:
    async def read(conn: AsyncConnection[Any], admission: Admission) -> Decide:
        async def later() -> None:
            await decide(conn, admission.pipeline, admission, admission.now)

        return later

    return read


# (the field of model.Flow it decides on, the feature), in the order they decide.
# Debounce and batch last: an event the others answer joins no burst or batch.
FEATURES: list[tuple[str, Feature]] = [
    ("idempotency", _flow_idempotency.read),
    ("rate_limit", _flow_rate_limit.read),
    ("singleton", _flow_singleton.read),
    ("debounce", _deciding_late(_flow_debounce.decide)),
    ("batch", _deciding_late(_flow_batch.decide)),
]


def bucket_of(run: NewRun, feature: str) -> str | None:
    """The bucket of ``run``'s send-time control ``feature`` (a field of ``model.Flow``
    holding a struct with a ``bucket``), or None if it has none."""
    control = getattr(run.flow, feature) if run.flow is not None else None
    return None if control is None else str(control.bucket)


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
    admission = Admission(events, channel=channel, pipeline=pipeline)
    names = sorted({b for e in events if e.run is not None for b in _buckets(e.run)})
    if names:
        lock = {"ns": FLOW_LOCKS, "names": names, "exclusive": [True] * len(names)}
        await conn.execute(LOCK_NAMES, lock)
    clock = await conn.execute(CLOCK, {"now": now})
    repeated = await _repeated_keys(conn, admission)
    decides = [await read(conn, admission) for _, read in FEATURES]
    await pipeline.sync()
    row = await clock.fetchone()
    assert row is not None
    admission.now = row[0]
    for decide in (repeated, *decides):
        if decide is not None:
            await decide()
    return admission


async def _repeated_keys(conn: AsyncConnection[Any], admission: Admission) -> Decide | None:
    """Drop the runs whose per-send key a run already holds, or an earlier one of the batch."""
    keyed = [(i, r) for i, r in admission.pending() if r.flow is not None and r.key is not None]
    if not keyed:
        return None
    params = {"events": [r.event for _, r in keyed], "keys": [r.key for _, r in keyed]}
    cursor = await conn.execute(KEYED_RUNS, params)

    async def decide() -> None:
        taken = {(event, key): RunId(id_) for event, key, id_ in await cursor.fetchall()}
        first: dict[tuple[str, str | None], int] = {}
        for i, run in keyed:
            key = (run.event, run.key)
            if key in taken:
                admission.drop(i, taken[key])
            elif key in first:
                admission.follow(i, first[key])
            else:
                first[key] = i

    return decide


async def prune_flow_sends(conn: AsyncConnection[Any], now: datetime | None) -> None:
    """Forget the expired idempotency answers and rate-limit rows (``delete_finished``):
    they decide nothing any more, and would otherwise pile up, one per bucket ever used."""
    await _flow_idempotency.prune(conn, now)
    await _flow_rate_limit.prune(conn, now)


def _buckets(run: NewRun) -> list[str]:
    """The lock names of a run's send-time buckets: feature name, then the bucket."""
    if run.flow is None:
        return []
    found = ((name, bucket_of(run, name)) for name, _ in FEATURES)
    return [f"{name}:{bucket}" for name, bucket in found if bucket is not None]
