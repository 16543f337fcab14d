"""Batching at send time: events of one bucket collected into one run.

A bucket's *open* batch is its newest run (index ``runs_flow_batch``, migration 0014) if
that run never started (still queued, never leased: ``lease_token`` is set by the first
claim and never cleared; a rerun's copy is never one) and is not full. Events join it in
the order sent; those that
do not fit open new batches (``slayq.store._flow_collect.plan``: the rules the memory store
shares). A batch run's data is ``{"events": [...]}``; it is due ``timeout`` after its
first event, or at once when full. Every event answers the id of the batch it joined.

``admit`` holds the bucket's advisory lock, so senders of one bucket are decided one
after another: no event is lost or lands in two batches. A claimer takes no such lock.
``LOCK_OPEN`` locks the open batch's row (FOR UPDATE, then re-checked as the claimer
left it: READ COMMITTED), so either the claim came first and the batch is not open, or
the claimer skips the row (SKIP LOCKED) until this transaction has appended to it.

Appending rewrites the run's data: the text of the events joins the array's text (``json``
keeps it verbatim), so the data stays compact and its size is its length. That rewrite
is why a batch's data is held to ``FlowBatch.max_bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import RunId
from slayq.store._flow_collect import batch_run, plan
from slayq.store.postgres._codec import dump
from slayq.store.postgres.sql.common import NOW, compact

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncPipeline

    from slayq.model import FlowBatch, NewRun
    from slayq.store.postgres._admit import Admission

# Per bucket, its newest run if it never started, locked, with its event count and size
# as it is once locked (FOR UPDATE re-reads a row another transaction changed).
LOCK_OPEN = compact("""
select t.bucket, r.id::text, json_array_length(r.data -> 'events'), octet_length(r.data::text)
from unnest(%(buckets)s::text[]) as t(bucket)
cross join lateral (
    select id from runs
    where (flow -> 'batch' ->> 'bucket') = t.bucket and forked_from is null
    order by seq desc
    limit 1
) as n
join runs as r on r.id = n.id
where r.status = 'queued' and r.lease_token is null
for update of r
""")

# The locked batches take their new events (``items``: their data, comma-separated; may
# be empty) before the array's closing "]}", and those now full are due: their queues'
# listeners are told.
APPEND = compact(f"""
with t as (
    select * from unnest(%(ids)s::uuid[], %(items)s::text[], %(full)s::bool[])
        as t(id, items, is_full)
),
appended as (
    update runs as r set
        data = case when t.items = '' then r.data
                    else (left(r.data::text, -2) || ',' || t.items || ']}}')::json end,
        run_at = case when t.is_full then least(r.run_at, {NOW}) else r.run_at end,
        updated_at = {NOW}
    from t
    where r.id = t.id
    returning r.queue, t.is_full
)
select count(pg_notify(%(channel)s, q.queue))
from (select distinct queue from appended where is_full) as q
""")


async def decide(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    admission: Admission,
    now: datetime | None,
) -> None:
    """Put each event in its bucket's open batch or a new one (see the module doc)."""
    groups: dict[str, list[tuple[int, NewRun, FlowBatch]]] = {}
    for i, run in admission.pending():
        batch = run.flow.batch if run.flow is not None else None
        if batch is not None:
            groups.setdefault(batch.bucket, []).append((i, run, batch))
    if not groups:
        return
    cursor = await conn.execute(LOCK_OPEN, {"buckets": list(groups)})
    await pipeline.sync()
    open_batches = {b: (RunId(i), n, size) for b, i, n, size in await cursor.fetchall()}
    appends: list[tuple[RunId, str, bool]] = []
    for bucket, group in groups.items():
        texts = [dump(run.data) for _, run, _ in group]
        found = open_batches.get(bucket)
        at = plan(
            group[0][2],
            [len(text.encode()) for text in texts],
            (found[1], found[2]) if found is not None else None,
        )
        if found is not None and (at.joining or at.open_full):
            appends.append((found[0], ",".join(texts[: at.joining]), at.open_full))
            for i, _, _ in group[: at.joining]:
                admission.drop(i, found[0])
        for start, end, full in at.new:
            (first_index, first, batch), members = group[start], group[start:end]
            events = [run.data for _, run, _ in members]
            admission.replace(first_index, batch_run(first, batch, events, full=full))
            for i, _, _ in members[1:]:
                admission.drop(i, first.id)
    if appends:
        params = {
            "ids": [run_id for run_id, _, _ in appends],
            "items": [items for _, items, _ in appends],
            "full": [full for _, _, full in appends],
            "now": now,
            "channel": admission.channel,
        }
        await conn.execute(APPEND, params)
