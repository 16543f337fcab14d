"""Rate limits: an event over its bucket's rate starts no run (``flow_rate_limits``, 0013).

GCRA (``_flow_sends.gcra``) on each bucket's theoretical arrival time, decided event by
event in the batch's order. A rejected event is ingested all the same (logged, waking
waits, cancelling runs); only its run is dropped, and ``send_events`` answers None for
it. A row whose time has passed allows what no row does, so ``delete_finished`` prunes
those (``PRUNE``). SQL as in ``sql``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.store._flow_sends import gcra
from slayq.store.postgres.sql.common import NOW, compact

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection

    from slayq.store.postgres._admit import Admission, Decide

READ = compact("select bucket, tat from flow_rate_limits where bucket = any(%(buckets)s::text[])")

WRITE = compact("""
insert into flow_rate_limits (bucket, tat)
select * from unnest(%(buckets)s::text[], %(tats)s::timestamptz[])
on conflict (bucket) do update set tat = excluded.tat
""")

# No index on tat: it changes with every admitted event, and an index would cost those
# updates their HOT path. The table holds a row per recently used bucket; a scan of it
# once per retention pass is cheap.
PRUNE = compact(f"delete from flow_rate_limits where tat <= {NOW}")


async def read(conn: AsyncConnection[Any], admission: Admission) -> Decide | None:
    names = admission.buckets("rate_limit")
    if not names:
        return None
    cursor = await conn.execute(READ, {"buckets": names})

    async def decide() -> None:
        tats: dict[str, datetime] = dict(await cursor.fetchall())
        changed: dict[str, datetime] = {}
        for i, run in admission.pending():
            rate = run.flow.rate_limit if run.flow is not None else None
            if rate is None:
                continue
            tat = gcra(tats.get(rate.bucket), admission.now, rate)
            if tat is None:
                admission.drop(i, None)
            else:
                tats[rate.bucket] = changed[rate.bucket] = tat
        if changed:
            await conn.execute(WRITE, {"buckets": list(changed), "tats": list(changed.values())})

    return decide


async def prune(conn: AsyncConnection[Any], now: datetime | None) -> None:
    """Delete the rows whose arrival time passed (``delete_finished`` calls it)."""
    await conn.execute(PRUNE, {"now": now})
