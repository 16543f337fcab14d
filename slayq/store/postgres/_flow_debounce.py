"""Debounce at send time: a burst of events of one bucket makes one run.

The bucket's *pending* run is its newest run (index ``runs_flow_debounce``, migration
0014; a rerun's copy is never one) if that run never started: still queued and never
leased (``lease_token`` is set by the first claim and never cleared, so a run that ran
and was queued again does not count). An event of the bucket joins it: the run takes
the event's data and cancel rules and is due ``period`` from now, but never later than
``timeout`` after its creation (the first event). Without a pending run, the event
starts one, due ``period`` from now. Every event answers the id of the run it joined
or started.

``admit`` holds the bucket's advisory lock, so senders of one bucket are decided one
after another. A claimer takes no such lock: it may lease the pending run while we
decide. The UPDATE says ``status = 'queued' and lease_token is null``: if a claimer has
the row locked, the UPDATE waits for it and re-checks that condition on the row as the
claimer left it (READ COMMITTED), updating nothing if the run started; the event then
starts a new run. If the UPDATE locks the row first, the claimer skips it (SKIP LOCKED)
and claims it later, with the new data.

The events of one ``send_events`` call that share a bucket arrive at the same instant:
they are decided together, as one burst, in one statement and one round trip.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slayq.model import RunId
from slayq.store._flow_collect import debounce_run
from slayq.store.postgres._codec import dump
from slayq.store.postgres.sql.common import NOW, compact

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection, AsyncPipeline

    from slayq.model import FlowWindow, NewRun
    from slayq.store.postgres._admit import Admission

_MICROSECOND = timedelta(microseconds=1)

# Per bucket, its newest run, updated if it never started. Cancel rules follow the data:
# the run's rules become those of the event whose data it now has. ``least`` ignores a
# null, so a debounce without a timeout is due ``period`` after the last event.
JOIN_PENDING = compact(f"""
with t as (
    select * from json_to_recordset(%(rows)s::json) as t(
        bucket text, data json, cancel_on json, period_us bigint, timeout_us bigint)
),
newest as (
    select t.*, n.id
    from t
    cross join lateral (
        select id from runs
        where (flow -> 'debounce' ->> 'bucket') = t.bucket and forked_from is null
        order by seq desc
        limit 1
    ) as n
),
joined as (
    update runs as r set
        data = n.data,
        cancel_on = case when json_array_length(n.cancel_on) > 0 then n.cancel_on end,
        run_at = least({NOW} + n.period_us * interval '1 microsecond',
                       r.created_at + n.timeout_us * interval '1 microsecond'),
        updated_at = {NOW}
    from newest as n
    where r.id = n.id and r.status = 'queued' and r.lease_token is null
    returning r.id, n.bucket, n.cancel_on
),
old_rules as (delete from cancel_rules where run_id in (select id from joined)),
new_rules as (
    insert into cancel_rules (run_id, event, field, value)
    select j.id, c.rule ->> 'event', c.rule ->> 'field',
           coalesce(c.rule -> 'value', 'null'::json)::jsonb
    from joined as j
    cross join lateral json_array_elements(j.cancel_on) as c(rule)
)
select bucket, id::text from joined
""")


async def decide(
    conn: AsyncConnection[Any],
    pipeline: AsyncPipeline,
    admission: Admission,
    now: datetime | None,
) -> None:
    """Join each burst to its bucket's pending run, or start one (see the module doc)."""
    bursts: dict[str, list[tuple[int, NewRun, FlowWindow]]] = {}
    for i, run in admission.pending():
        window = run.flow.debounce if run.flow is not None else None
        if window is not None:
            bursts.setdefault(window.bucket, []).append((i, run, window))
    if not bursts:
        return
    rows = []
    for bucket, burst in bursts.items():
        _, last, window = burst[-1]
        timeout = window.timeout
        rows.append(
            {
                "bucket": bucket,
                "data": last.data,
                "cancel_on": last.cancel_on,
                "period_us": window.period // _MICROSECOND,
                "timeout_us": timeout // _MICROSECOND if timeout is not None else None,
            }
        )
    cursor = await conn.execute(JOIN_PENDING, {"rows": dump(rows), "now": now})
    await pipeline.sync()
    joined: dict[str, RunId] = {b: RunId(i) for b, i in await cursor.fetchall()}
    for bucket, burst in bursts.items():
        pending_id = joined.get(bucket)
        if pending_id is None:
            # The burst's first event starts the run, with the last event's data.
            (first_index, first, window), (_, last, _) = burst[0], burst[-1]
            admission.replace(first_index, debounce_run(first, last, window))
            pending_id = first.id
            burst = burst[1:]
        for i, _, _ in burst:
            admission.drop(i, pending_id)
