"""Cron schedules: registered per app, fired at most once per tick across processes.

Ticks are computed in Python (croniter, with the schedule's timezone) from the database's
now. Firing is a compare-and-set on ``next_at``: of the processes that read the same due
tick, one moves it and starts the run; the run's idempotency key ``cron:<tick>`` would
refuse a second one anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.model import NewRun, RunId, Schedule
from slayq.runtime.cron import CronSpec
from slayq.runtime.ids import new_run_id
from slayq.store._schedule_sets import checked_schedules
from slayq.store.postgres._codec import due_now, dump, run_rows
from slayq.store.postgres._transaction import pipelined_transaction
from slayq.store.postgres.sql.common import CLOCK, NOTIFY, SCHEDULE_LOCKS
from slayq.store.postgres.sql.schedules import (
    ADVANCE_SCHEDULES,
    DROP_SCHEDULES,
    DUE_SCHEDULES,
    SCHEDULES,
    UPSERT_SCHEDULES,
)
from slayq.store.postgres.sql.sending import INSERT_RUNS

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from psycopg import AsyncConnection

_template = msgspec.json.Decoder(NewRun)


async def set_schedules(
    conn: AsyncConnection[Any],
    schedules: Sequence[Schedule],
    *,
    app: str,
    events: Collection[str],
    now: datetime | None,
) -> None:
    checked = checked_schedules(schedules, app=app, events=events)  # bad: change nothing
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(%(ns)s, 0)", {"ns": SCHEDULE_LOCKS})
        cursor = await conn.execute(SCHEDULES, {"now": now})
        stored = {event: (cron, next_at) for event, cron, next_at in await cursor.fetchall()}
        clock = await conn.execute(CLOCK, {"now": now})
        (today,) = await clock.fetchone() or (datetime.now(UTC),)
        kept = sorted(checked)
        next_ats: list[datetime] = []
        for event in kept:
            spec, old = checked[event][1], stored.get(event)
            next_ats.append(old[1] if old and old[0] == spec.text else spec.next_after(today))
        mine = {"app": app, "kept": kept}
        await conn.execute(DROP_SCHEDULES, mine | {"runs": sorted(set(events))})
        if kept:
            await conn.execute(
                UPSERT_SCHEDULES,
                mine
                | {
                    "events": kept,
                    "crons": [checked[e][0].cron for e in kept],
                    "templates": [dump(checked[e][0].template) for e in kept],
                    "next_ats": next_ats,
                },
            )


async def fire_schedules(
    conn: AsyncConnection[Any], *, now: datetime | None, channel: str
) -> list[RunId]:
    cursor = await conn.execute(DUE_SCHEDULES, {"now": now})
    due = await cursor.fetchall()
    if not due:
        return []
    runs: dict[str, NewRun] = {}
    next_ats: list[datetime] = []
    for event, cron, template, tick, today in due:
        next_ats.append(CronSpec(cron).next_after(today))
        runs[event] = msgspec.structs.replace(
            _template.decode(template),
            id=new_run_id(),
            key=f"cron:{tick.isoformat()}",
            run_at=tick,
        )
    moves = {
        "events": [row[0] for row in due],
        "ticks": [row[3] for row in due],
        "next_ats": next_ats,
    }
    async with pipelined_transaction(conn) as pipeline:
        moved = await conn.execute(ADVANCE_SCHEDULES, moves)
        await pipeline.sync()
        won = [runs[row[0]] for row in await moved.fetchall()]
        if not won:
            return []
        rows = [(i, run, None) for i, run in enumerate(won)]
        inserted = await conn.execute(INSERT_RUNS, run_rows(rows) | {"now": now})
        today = now or datetime.now(UTC)
        queues = sorted({run.queue for run in won if due_now(run, today)})
        await conn.execute(NOTIFY, {"channel": channel, "queues": queues})
    ids = [run_id for _, run_id in sorted(await inserted.fetchall())]
    return [RunId(run_id) for run_id in ids if run_id is not None]
