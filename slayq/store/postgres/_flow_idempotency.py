"""Idempotency: the first answer of a bucket holds for ``ttl`` (``flow_once``, 0013).

A bucket's answer is the run its first event started, or the existing run it was
answered with (a singleton skip); an event that started nothing (rate limited) leaves
no answer, so the next one is decided afresh. A second event of the bucket in the same
batch is answered as the first. The answer is written after the ingest, when the
features have all decided; an expired row decides nothing and is replaced, and
``delete_finished`` prunes them (``PRUNE``). SQL as in ``sql``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.model import RunId
from slayq.store._flow_sends import later
from slayq.store.postgres.sql.common import NOW, compact

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection

    from slayq.store.postgres._admit import Admission, Decide

READ = compact("""
select bucket, run_id::text, expires_at from flow_once where bucket = any(%(buckets)s::text[])
""")

KEEP = compact("""
insert into flow_once (bucket, run_id, expires_at)
select * from unnest(%(buckets)s::text[], %(run_ids)s::uuid[], %(expires)s::timestamptz[])
on conflict (bucket) do update set run_id = excluded.run_id, expires_at = excluded.expires_at
""")

# Expired answers, a batch at a time: ``flow_once_expiry`` reads only those.
PRUNE = compact(f"""
with doomed as (
    select bucket from flow_once where expires_at <= {NOW}
    order by expires_at limit %(batch)s for update skip locked
)
delete from flow_once where bucket in (select bucket from doomed)
""")


async def read(conn: AsyncConnection[Any], admission: Admission) -> Decide | None:
    names = admission.buckets("idempotency")
    if not names:
        return None
    cursor = await conn.execute(READ, {"buckets": names})

    async def decide() -> None:
        now = admission.now
        kept = {b: (RunId(run_id), expires_at) for b, run_id, expires_at in await cursor.fetchall()}
        first: dict[str, tuple[int, datetime]] = {}  # bucket: its first event, the expiry
        for i, run in admission.pending():
            once = run.flow.idempotency if run.flow is not None else None
            if once is None:
                continue
            answer = kept.get(once.bucket)
            if answer is not None and answer[1] > now:
                admission.drop(i, answer[0])
            elif once.bucket in first:
                admission.follow(i, first[once.bucket][0])
            else:
                what = f"idempotency bucket {once.bucket!r}"
                first[once.bucket] = (i, later(now, once.ttl, what=what))
        if first:
            admission.after_ingest(lambda conn: _keep(conn, admission, first))

    return decide


async def _keep(
    conn: AsyncConnection[Any], admission: Admission, first: dict[str, tuple[int, datetime]]
) -> None:
    rows = [(b, admission.outcome(i), expires) for b, (i, expires) in first.items()]
    rows = [row for row in rows if row[1] is not None]
    if rows:
        params = {
            "buckets": [b for b, _, _ in rows],
            "run_ids": [run_id for _, run_id, _ in rows],
            "expires": [expires for _, _, expires in rows],
        }
        await conn.execute(KEEP, params)


async def prune(conn: AsyncConnection[Any], now: datetime | None, batch: int = 5000) -> None:
    """Delete the expired answers, in batches (``delete_finished`` calls it)."""
    while True:
        cursor = await conn.execute(PRUNE, {"now": now, "batch": batch})
        if cursor.rowcount < batch:
            return
