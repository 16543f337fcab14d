"""Singletons: at most one unfinished run per bucket.

The unfinished runs of a bucket are read from ``runs`` itself (``runs_singleton``, an
expression index on ``runs.flow``, migration 0013), so a run counts however it was
created. A new event either answers the oldest of them and starts nothing
(``mode="skip"``), or cancels them all and starts its own (``mode="cancel"``): fenced
(their holders' commits then fail with ``LeaseLostError``), kept as cancelled, their
attempts recorded and their invokers answered, as ``cancel_run`` does. Events of one
batch are decided in order, as if sent one by one; a run of the batch that a later
event cancels is started and then cancelled, so the cancels come after the ingest.
SQL as in ``sql``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import CANCELLED, RunId
from slayq.store.postgres._codec import dump
from slayq.store.postgres.sql.common import FINISHED, compact
from slayq.store.postgres.sql.finishing import FINISH_IDS, LOCK_PARENTS, RESOLVE_PARENTS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from slayq.store.postgres._admit import Admission, Decide

# The WHERE clause repeats the index's predicate, so the planner uses it.
READ = compact(f"""
select flow -> 'singleton' ->> 'bucket', id::text from runs
where flow -> 'singleton' ->> 'bucket' = any(%(buckets)s::text[])
  and status not in {FINISHED}
order by seq
""")


async def read(conn: AsyncConnection[Any], admission: Admission) -> Decide | None:
    names = admission.buckets("singleton")
    if not names:
        return None
    cursor = await conn.execute(READ, {"buckets": names})

    async def decide() -> None:
        # Per bucket, its unfinished runs: ids of runs in the table, or the index of an
        # event of this batch whose run is to start.
        holders: dict[str, list[RunId | int]] = {}
        for bucket, run_id in await cursor.fetchall():
            holders.setdefault(bucket, []).append(RunId(run_id))
        doomed: list[RunId | int] = []
        for i, run in admission.pending():
            single = run.flow.singleton if run.flow is not None else None
            if single is None:
                continue
            active = holders.get(single.bucket, [])
            if active and single.mode == "skip":
                first = active[0]
                if isinstance(first, int):
                    admission.follow(i, first)
                else:
                    admission.drop(i, first)
                continue
            doomed += active
            holders[single.bucket] = [i]
        if doomed:
            admission.after_ingest(lambda conn: _cancel(conn, admission, doomed))

    return decide


async def _cancel(
    conn: AsyncConnection[Any], admission: Admission, doomed: list[RunId | int]
) -> None:
    """Cancel ``doomed`` (the batch's runs by event index, if they were started)."""
    ids: list[str] = []
    for holder in doomed:
        if isinstance(holder, int):
            run = admission.events[holder].run
            if run is not None:
                ids.append(run.id)
        else:
            ids.append(holder)
    if not ids:
        return
    params = {"now": admission.now, "channel": admission.channel, "ids": ids}
    finish = {"status": "cancelled", "result": None, "error": None}
    await conn.execute(FINISH_IDS, params | finish)
    await conn.execute(LOCK_PARENTS, params)
    parents = {"seq": None, "cancelled": dump(CANCELLED)}
    await conn.execute(RESOLVE_PARENTS, params | parents)
