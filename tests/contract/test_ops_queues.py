"""Operations on waits, queues, schedules and workers (every test runs on each store)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from slayq.errors import InputError
from slayq.model import (
    AuditEntry,
    Completed,
    Continue,
    PendingStep,
    QueueInfo,
    RunId,
    Schedule,
    ScheduleInfo,
    Suspend,
    Transition,
    WaitInfo,
    WorkerInfo,
)
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import QueueLimit, Store
from tests.contract.helpers import LEASE, claim_all, new_run, plain_event, start

pytestmark = pytest.mark.anyio


async def suspend_on(store: Store, queue: str, *pending: PendingStep) -> RunId:
    """Start a run in ``queue``, claim it and suspend it on ``pending``."""
    run_id = await start(store, queue=queue)
    (claim,) = [c for c in await claim_all(store) if c.lease.run_id == run_id]
    await store.commit(claim.lease, Transition(steps=[], outcome=Suspend(list(pending))))
    return run_id


def wait(name: str, event: str, field: str | None, value: Any, **kw: Any) -> PendingStep:
    return PendingStep(
        name=name, kind="wait", event=event, match_field=field, match_value=value, **kw
    )


async def audit_rows(store: Store) -> list[AuditEntry]:
    """The audit log, oldest first (it is written by the store, read by the runs helpers)."""
    from slayq.store.memory import MemoryStore

    if isinstance(store, MemoryStore):
        return list(store._audit)
    import psycopg

    from slayq.store.postgres import PostgresStore, parse_url

    assert isinstance(store, PostgresStore)
    async with await psycopg.AsyncConnection.connect(parse_url(store.url).url) as conn:
        cursor = await conn.execute(
            f"select at, actor, action, target, detail from {store.schema}.audit_log order by id"
        )
        return [AuditEntry(*row) for row in await cursor.fetchall()]


# -- waits -----------------------------------------------------------------------------


async def test_list_waits_shows_each_pending_wait_soonest_deadline_first(
    store: Store, clock: VirtualClock
) -> None:
    now = clock.now()
    late = await suspend_on(
        store, "general", wait("approval", "doc/approved", "doc_id", {"id": 7}, delay=LEASE * 10)
    )
    never = await suspend_on(store, "general", wait("any", "ping", None, None))
    soon = await suspend_on(
        store,
        "mail",
        wait("reply", "mail/replied", "thread", "t-1", until=now + timedelta(minutes=1)),
        PendingStep(name="nap", kind="sleep", delay=timedelta(hours=1)),
    )
    waits = await store.list_waits()
    assert waits == [
        WaitInfo(soon, "reply", "mail/replied", "thread", "t-1", now + timedelta(minutes=1)),
        WaitInfo(late, "approval", "doc/approved", "doc_id", {"id": 7}, now + LEASE * 10),
        WaitInfo(never, "any", "ping", None, None, None),
    ]
    assert [w.run_id for w in await store.list_waits(event="ping")] == [never]
    assert [w.run_id for w in await store.list_waits(limit=2)] == [soon, late]
    # An answered wait is gone from the list.
    await store.send_events([plain_event("mail/replied", {"thread": "t-1"})])
    assert [w.run_id for w in await store.list_waits()] == [late, never]


async def test_list_waits_refuses_a_bad_limit(store: Store) -> None:
    for limit in (0, -1, 10_001):
        with pytest.raises(InputError, match="limit must be an integer"):
            await store.list_waits(limit=limit)


# -- pausing ---------------------------------------------------------------------------


async def test_a_paused_queue_is_not_claimed_and_resuming_frees_it(store: Store) -> None:
    mail = await start(store, queue="mail")
    general = await start(store, queue="general")
    assert await store.pause_queue("mail", actor="cli:ann@host") is True
    assert await store.pause_queue("mail", actor="cli:ann@host") is False  # paused already
    # Neither a claim of every queue nor one naming the queue takes its runs.
    assert [c.lease.run_id for c in await claim_all(store)] == [general]
    limited = [QueueLimit(names=["mail"], concurrency=5)]
    assert await store.claim(queues=limited, limit=5, lease_for=LEASE, owner="w2") == []
    assert await store.resume_queue("mail", actor="api") is True
    assert await store.resume_queue("mail", actor="api") is False
    assert [c.lease.run_id for c in await claim_all(store)] == [mail]


async def test_pausing_lets_running_runs_finish_and_takes_over_no_expired_lease(
    store: Store, clock: VirtualClock
) -> None:
    run_id = await start(store, queue="mail")
    (claim,) = await claim_all(store)
    await store.pause_queue("mail", actor="api")
    # The run already running commits as usual.
    await store.commit(claim.lease, Transition(steps=[], outcome=Continue()))
    assert len(await store.extend_leases([claim.lease], LEASE)) == 1
    # Its lease runs out: a takeover is a claim, and the queue is paused.
    clock.advance(LEASE * 2)
    assert await claim_all(store) == []
    assert (await store.get_run(run_id)).attempts == 1
    await store.resume_queue("mail", actor="api")
    (taken,) = await claim_all(store, owner="w2")
    assert (taken.lease.run_id, taken.attempt, taken.taken_over_from) == (run_id, 2, "w1")


async def test_pause_and_resume_write_the_audit_log(store: Store, clock: VirtualClock) -> None:
    await store.pause_queue("mail", actor="cli:ann@host")
    clock.advance(timedelta(minutes=5))
    await store.resume_queue("mail", actor="api")
    at = clock.now()
    assert await audit_rows(store) == [
        AuditEntry(at - timedelta(minutes=5), "cli:ann@host", "pause_queue", "mail", None),
        AuditEntry(at, "api", "resume_queue", "mail", None),
    ]


@pytest.mark.parametrize(
    ("name", "actor", "message"),
    [
        ("", "api", "queue name must be a non-empty string"),
        ("   ", "api", "queue name must be a non-empty string"),
        ("x" * 201, "api", "queue name must be a non-empty string"),
        ("mail", "", "actor must be a non-empty string"),
    ],
)
async def test_pause_and_resume_refuse_bad_input_and_change_nothing(
    store: Store, name: str, actor: str, message: str
) -> None:
    run_id = await start(store, queue="mail")
    with pytest.raises(InputError, match=message):
        await store.pause_queue(name, actor=actor)
    with pytest.raises(InputError, match=message):
        await store.resume_queue(name, actor=actor)
    assert await audit_rows(store) == []
    assert [q.paused for q in await store.list_queues()] == [False]
    assert [c.lease.run_id for c in await claim_all(store)] == [run_id]


# -- listing queues --------------------------------------------------------------------


async def test_list_queues_counts_each_unfinished_run_once(
    store: Store, clock: VirtualClock
) -> None:
    start_at = clock.now()
    await start(store, queue="media")  # will run
    await start(store, queue="media")  # will sleep
    await start(store, queue="media")  # will wait
    finished = await start(store, queue="media")
    claims = {c.lease.run_id: c for c in await claim_all(store)}
    ids = list(claims)
    await store.commit(
        claims[ids[1]].lease,
        Transition(
            steps=[],
            outcome=Suspend([PendingStep(name="nap", kind="sleep", delay=timedelta(hours=1))]),
        ),
    )
    await store.commit(
        claims[ids[2]].lease, Transition(steps=[], outcome=Suspend([wait("w", "e", None, None)]))
    )
    await store.commit(claims[finished].lease, Transition(steps=[], outcome=Completed()))
    clock.advance(timedelta(minutes=1))
    await start(store, queue="media")  # due now
    await start(store, queue="media", delay=timedelta(days=1))  # a delayed start
    await start(store, queue="mail", priority=5)
    clock.advance(timedelta(minutes=1))
    await start(store, queue="mail")
    await store.pause_queue("idle", actor="api")
    now = clock.now()
    assert await store.list_queues() == [
        QueueInfo("idle", due=0, running=0, sleeping=0, waiting=0, oldest_due_at=None, paused=True),
        QueueInfo("mail", 2, 0, 0, 0, oldest_due_at=now - timedelta(minutes=1), paused=False),
        QueueInfo("media", 1, 1, 2, 1, oldest_due_at=start_at + timedelta(minutes=1), paused=False),
    ]
    # A sleep that expired makes its run due; it became due when the sleep ended.
    clock.set(start_at + timedelta(hours=2))
    media = [q for q in await store.list_queues() if q.name == "media"]
    assert media == [
        QueueInfo("media", 2, 1, 1, 1, oldest_due_at=start_at + timedelta(minutes=1), paused=False)
    ]


async def test_list_queues_is_empty_without_runs_or_pauses(store: Store) -> None:
    assert await store.list_queues() == []
    await store.pause_queue("mail", actor="api")
    await store.resume_queue("mail", actor="api")
    assert await store.list_queues() == []


# -- schedules and workers ------------------------------------------------------------


async def test_list_schedules_shows_each_schedule_with_its_app_and_next_tick(
    store: Store, clock: VirtualClock
) -> None:
    hourly = Schedule(event="b/hourly", cron="0 * * * *", template=new_run(event="b/hourly"))
    daily = Schedule(event="a/daily", cron="0 3 * * *", template=new_run(event="a/daily"))
    await store.set_schedules([hourly], app="worker", events=["b/hourly"])
    await store.set_schedules([daily], app="http://app/api", events=["a/daily"])
    start_at = clock.now()  # 2025-03-01 12:00
    assert await store.list_schedules() == [
        ScheduleInfo(
            "a/daily",
            "0 3 * * *",
            "http://app/api",
            datetime(2025, 3, 2, 3, 0, tzinfo=start_at.tzinfo),
        ),
        ScheduleInfo("b/hourly", "0 * * * *", "worker", start_at + timedelta(hours=1)),
    ]
    clock.advance(timedelta(hours=1))
    await store.fire_schedules()
    assert (await store.list_schedules())[1].next_at == start_at + timedelta(hours=2)


async def test_list_workers_shows_lease_holders_with_their_last_heartbeat(
    store: Store, clock: VirtualClock
) -> None:
    assert await store.list_workers() == []
    for _ in range(3):
        await start(store)
    first = await store.claim(queues=None, limit=2, lease_for=LEASE, owner="host-a:1")
    claimed_at = clock.now()
    clock.advance(timedelta(seconds=10))
    (second,) = await claim_all(store, owner="host-b:2")
    clock.advance(timedelta(seconds=10))
    await store.extend_leases([first[0].lease], LEASE)
    assert await store.list_workers() == [
        WorkerInfo("host-a:1", runs_held=2, last_heartbeat_at=claimed_at + timedelta(seconds=20)),
        WorkerInfo("host-b:2", runs_held=1, last_heartbeat_at=claimed_at + timedelta(seconds=10)),
    ]
    # A finished run is no longer held; a worker that holds nothing is not listed.
    await store.commit(second.lease, Transition(steps=[], outcome=Completed()))
    assert [w.owner for w in await store.list_workers()] == ["host-a:1"]


async def test_next_wakeup_ignores_paused_queues(store: Store, clock: VirtualClock) -> None:
    # A paused queue's runs never become due until the resume (which notifies): a
    # sleeper polling next_wakeup would otherwise wake again and again for nothing.
    due = await start(store, queue="mail")
    await start(store, queue="mail", delay=timedelta(hours=1))
    (claim,) = await claim_all(store)
    assert claim.lease.run_id == due
    await store.pause_queue("mail", actor="api")
    assert await store.next_wakeup() is None
    await store.resume_queue("mail", actor="api")
    assert await store.next_wakeup() == claim.lease.expires_at
