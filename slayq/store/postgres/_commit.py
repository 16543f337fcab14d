"""``commit``: a transition applied in one transaction, mostly in one statement.

Most commits touch only their own run: Continue, a retry, a sleep, finishing a run no
caller waits for. They are one statement (``COMMIT_DIRECT``), which is a transaction of
its own. The rest (waits, invocations, sent events, answering a caller) run as a
pipelined transaction: the first statement locks the run and checks the lease, and
every later statement that changes the run repeats the check in its WHERE clause, so a
lost lease makes them no-ops before ``LeaseLostError`` is raised. Sent events need the
lease checked before they are ingested, which costs a round trip; sent runs with
send-time flow control are first decided as ``send_events`` decides them (``_admit``),
which costs another.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slayq.errors import LeaseLostError
from slayq.model import CANCELLED, Completed, Continue, Failed, Lease, Outcome, Suspend, Transition
from slayq.store.postgres._admit import admit, decided_at_send
from slayq.store.postgres._codec import (
    due_now,
    dump,
    pending_rows,
    run_rows,
    step_rows,
)
from slayq.store.postgres._ingest import Ingest, lock_event_names
from slayq.store.postgres._transaction import pipelined_transaction
from slayq.store.postgres.sql.committing import (
    COMMIT_DIRECT,
    HELD_ROW,
    INSERT_PENDING,
    INSERT_STEPS,
    RETRY,
    SCAN_LOG,
    SUSPEND,
    TOUCH,
)
from slayq.store.postgres.sql.common import NOTIFY
from slayq.store.postgres.sql.finishing import FINISH_HELD, LOCK_PARENTS, RESOLVE_PARENTS
from slayq.store.postgres.sql.sending import INSERT_RUNS

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor


async def commit(
    conn: AsyncConnection[Any],
    lease: Lease,
    transition: Transition,
    *,
    now: datetime | None,
    channel: str,
) -> None:
    outcome = transition.outcome
    if not transition.sent and _direct(outcome):
        row = await _commit_direct(conn, lease, transition, now=now, channel=channel)
        _check(row, lease)
        if row is not None and not (row[1] and _finishes(outcome)):
            return
    waits = (
        [p.event for p in outcome.pending if p.kind == "wait" and p.event is not None]
        if isinstance(outcome, Suspend)
        else []
    )
    held: AsyncCursor[Any]
    async with pipelined_transaction(conn) as pipeline:
        # Sent runs with send-time flow control are decided first, their bucket locks
        # taken before any other (as ``send_events`` takes them); if the lease turns out
        # lost, the transaction and so the decisions are rolled back.
        admission = None
        if decided_at_send(transition.sent):
            admission = await admit(conn, pipeline, transition.sent, now=now, channel=channel)
        sent = admission.events if admission is not None else transition.sent
        ingest = Ingest(sent, now=now, channel=channel) if sent else None
        await lock_event_names(conn, shared=ingest.logged_names if ingest else (), exclusive=waits)
        counts = {"replayed": transition.replayed, "executed": len(transition.steps)}
        held = await conn.execute(HELD_ROW, {"id": lease.run_id, "token": lease.token} | counts)
        if transition.steps:
            params = step_rows(lease.run_id, lease.token, transition.steps)
            await conn.execute(INSERT_STEPS, params | {"now": now})
        if ingest is not None:
            await ingest.start(conn)
            await pipeline.sync()
            _check(await held.fetchone(), lease)
            await ingest.apply(conn, pipeline)
            if admission is not None:
                await admission.finish(conn)
        await _apply(conn, lease, outcome, now=now, channel=channel)
    if ingest is None:
        _check(await held.fetchone(), lease)


def _direct(outcome: Outcome) -> bool:
    """Whether ``COMMIT_DIRECT`` can apply the outcome (to a run without a caller)."""
    return not isinstance(outcome, Suspend) or all(p.kind == "sleep" for p in outcome.pending)


def _finishes(outcome: Outcome) -> bool:
    return isinstance(outcome, Completed) or (
        isinstance(outcome, Failed) and outcome.retry_after is None
    )


async def _commit_direct(
    conn: AsyncConnection[Any],
    lease: Lease,
    transition: Transition,
    *,
    now: datetime | None,
    channel: str,
) -> tuple[Any, ...] | None:
    """The one-statement commit (``COMMIT_DIRECT``); returns (held, has a parent)."""
    outcome = transition.outcome
    params = step_rows(lease.run_id, lease.token, transition.steps) | {
        "now": now,
        "channel": channel,
        "finishes": _finishes(outcome),
        "replayed": transition.replayed,
        "executed": len(transition.steps),
        # How the attempt ended, recorded in ``attempts``. None: it goes on, or it
        # completed the run, whose row then keeps the attempt (see sql.attempts).
        "ended": None,
        "outcome": "continue",
        "result": None,
        "error": None,
        "retry_after": None,
        "nap_names": [],
        "nap_untils": [],
        "nap_delays": [],
        "nap_specs": [],
    }
    if isinstance(outcome, Completed):
        params |= {"outcome": "completed", "result": dump(outcome.result)}
    elif isinstance(outcome, Failed):
        kind = "failed" if outcome.retry_after is None else "retry"
        ended = "failed" if outcome.retry_after is None else "retrying"
        params |= {"outcome": kind, "ended": ended, "error": dump(outcome.error)}
        params["retry_after"] = outcome.retry_after
    elif isinstance(outcome, Suspend):
        params |= {
            "outcome": "sleep",
            "ended": "suspended",
            "nap_names": [p.name for p in outcome.pending],
            "nap_untils": [p.until for p in outcome.pending],
            "nap_delays": [p.delay for p in outcome.pending],
            "nap_specs": [dump(p) for p in outcome.pending],
        }
    cursor = await conn.execute(COMMIT_DIRECT, params)
    return await cursor.fetchone()


def _check(row: tuple[Any, ...] | None, lease: Lease) -> None:
    if row is None or not row[0]:
        raise LeaseLostError(
            f"run {lease.run_id}: lease {lease.token} is no longer held "
            "(it expired and was taken over, or the run was cancelled)"
        )


async def _apply(
    conn: AsyncConnection[Any],
    lease: Lease,
    outcome: Outcome,
    *,
    now: datetime | None,
    channel: str,
) -> None:
    """Queue the statements of the outcome; each is a no-op unless the lease is held."""
    base = {"id": lease.run_id, "token": lease.token, "now": now, "channel": channel}
    if isinstance(outcome, Continue):
        await conn.execute(TOUCH, base)
    elif isinstance(outcome, Completed):
        finish = {"status": "completed", "result": dump(outcome.result), "error": None}
        await _finish(conn, base | finish)
    elif isinstance(outcome, Failed):
        if outcome.retry_after is not None:
            retry = {"error": dump(outcome.error), "retry_after": outcome.retry_after}
            await conn.execute(RETRY, base | retry)
        else:
            finish = {"status": "failed", "result": None, "error": dump(outcome.error)}
            await _finish(conn, base | finish)
    else:
        await _suspend(conn, lease, outcome, base)


async def _finish(conn: AsyncConnection[Any], params: dict[str, Any]) -> None:
    await conn.execute(FINISH_HELD, params)
    # An invoked run answers its caller. The checks find nothing for a run without one.
    parents = params | {"ids": [params["id"]], "seq": None, "cancelled": dump(CANCELLED)}
    await conn.execute(LOCK_PARENTS, parents)
    await conn.execute(RESOLVE_PARENTS, parents)


async def _suspend(
    conn: AsyncConnection[Any], lease: Lease, outcome: Suspend, base: dict[str, Any]
) -> None:
    if outcome.pending:
        params = pending_rows(lease.run_id, lease.token, outcome.pending)
        await conn.execute(INSERT_PENDING, params | {"now": base["now"]})
    children = [p.child for p in outcome.pending if p.child is not None]
    if children:
        rows = [(i, child, None) for i, child in enumerate(children)]
        params = run_rows(rows, guard=(lease.run_id, lease.token))
        await conn.execute(INSERT_RUNS, params | {"now": base["now"]})
    for step in outcome.pending:
        if step.kind != "wait":
            continue
        scan = {
            "name": step.name,
            "event": step.event,
            "field": step.match_field,
            "value": dump(step.match_value) if step.match_field is not None else None,
        }
        await conn.execute(SCAN_LOG, base | scan)
    await conn.execute(SUSPEND, base)
    now = base["now"] or datetime.now(UTC)
    queues = sorted({c.queue for c in children if due_now(c, now)})
    if queues:
        await conn.execute(NOTIFY, {"channel": base["channel"], "queues": queues})
