"""Building blocks for store contract tests: runs and events as a client would resolve them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from slayq.model import (
    CancelRule,
    Claim,
    NewRun,
    OutgoingEvent,
    ParentLink,
    RunId,
)
from slayq.runtime.ids import new_run_id
from slayq.store.protocol import Store

LEASE = timedelta(seconds=30)


def new_run(
    event: str = "test/run",
    data: dict[str, Any] | None = None,
    *,
    queue: str = "general",
    priority: int = 0,
    max_attempts: int = 3,
    key: str | None = None,
    delay: timedelta | None = None,
    run_at: datetime | None = None,
    cancel_on: list[CancelRule] | None = None,
    parent: ParentLink | None = None,
    may_wait: bool = False,
) -> NewRun:
    return NewRun(
        id=new_run_id(),
        event=event,
        data=data or {},
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        key=key,
        delay=delay,
        run_at=run_at,
        cancel_on=cancel_on or [],
        parent=parent,
        may_wait=may_wait,
    )


def starting(run: NewRun, *, logged: bool = False) -> OutgoingEvent:
    return OutgoingEvent(name=run.event, data=run.data, run=run, logged=logged)


def plain_event(name: str, data: dict[str, Any], *, logged: bool = True) -> OutgoingEvent:
    return OutgoingEvent(name=name, data=data, logged=logged)


async def start(store: Store, **kwargs: Any) -> RunId:
    (run_id,) = await store.send_events([starting(new_run(**kwargs))])
    assert run_id is not None
    return run_id


async def claim_all(store: Store, *, limit: int = 100, owner: str = "w1") -> list[Claim]:
    return await store.claim(queues=None, limit=limit, lease_for=LEASE, owner=owner)


async def claim_one(store: Store) -> Claim:
    claims = await claim_all(store, limit=1)
    assert len(claims) == 1, f"expected one due run, got {len(claims)}"
    return claims[0]


async def event_log_size(store: Store) -> int:
    """How many events the store keeps in its event log (pruning is otherwise invisible)."""
    from slayq.store.memory import MemoryStore

    if isinstance(store, MemoryStore):
        return len(store._events)
    import psycopg

    from slayq.store.postgres import PostgresStore, parse_url

    assert isinstance(store, PostgresStore)
    async with await psycopg.AsyncConnection.connect(parse_url(store.url).url) as conn:
        cursor = await conn.execute(f"select count(*) from {store.schema}.events")
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
