"""Operations on runs in PostgreSQL: list them, retry, rerun (fork), bulk actions, audit.

The conventions of ``sql`` hold. A filter becomes a WHERE clause composed of fixed
fragments, one per given field, every value bound: each shape of filter is its own
statement, so the planner picks the index that fits it (a catch-all ``x is null or``
clause would be planned once for every shape and use none).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.errors import InputError, RunNotFoundError
from slayq.model import CANCELLED, AuditEntry, RunFilter, RunId, RunInfo, RunPage
from slayq.runtime.run_filters import (
    BULK_BATCH,
    check_filter,
    decode_cursor,
    describe_filter,
    encode_cursor,
    id_window,
    window,
)
from slayq.store.postgres._codec import dump, run_rows
from slayq.store.postgres.sql.common import NOW, compact
from slayq.store.postgres.sql.finishing import LOCK_PARENTS, RESOLVE_PARENTS, finish_runs
from slayq.store.postgres.sql.sending import INSERT_RUNS

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from slayq.model import NewRun

_run_info = msgspec.json.Decoder(RunInfo)
RETRYABLE = "('failed', 'cancelled')"
UNFINISHED = "('queued', 'running', 'sleeping', 'waiting')"

# A run as list_runs shows it: no steps, pending steps or history (get_run reads them).
_LISTED = """json_build_object(
    'id', r.id, 'event', r.event, 'queue', r.queue, 'status', r.status, 'data', r.data,
    'attempts', r.attempt, 'max_attempts', r.max_attempts, 'steps', '[]'::json,
    'pending', '[]'::json, 'created_at', r.created_at, 'updated_at', r.updated_at,
    'run_at', r.run_at, 'result', r.result, 'error', r.error, 'priority', r.priority,
    'key', r.key,
    'parent', case when r.parent_run_id is not null then
        json_build_object('run_id', r.parent_run_id, 'step', r.parent_step) end,
    'finished_at', r.finished_at, 'endpoint', r.endpoint, 'forked_from', r.forked_from
)::text"""

AUDIT = compact(f"""
insert into audit_log (at, actor, action, target, detail)
values ({NOW}, %(actor)s, %(action)s, %(target)s, %(detail)s::json)
""")

LIST_AUDIT = compact("""
select at, actor, action, target, detail::text from audit_log order by id desc limit %(limit)s
""")

RUN_STATUS = "select status from runs where id = %(id)s::uuid for update"


def _retry(targets: str) -> str:
    """Retry the failed or cancelled runs of ``targets`` (a query of ``id``s): due now, the
    attempt budget renewed, cancel rules back from ``runs.cancel_on``."""
    return compact(f"""
with retried as (
    update runs set
        status = 'queued', max_attempts = max_attempts + attempt, attempt = attempt + 1,
        run_at = {NOW}, result = null, finished_at = null, updated_at = {NOW},
        lease_expires_at = null, lease_owner = null
    where id in ({targets}) and status in {RETRYABLE}
    returning id, queue, cancel_on
),
dropped as (delete from cancel_rules where run_id in (select id from retried)),
rules as (
    insert into cancel_rules (run_id, event, field, value)
    select r.id, x.rule ->> 'event', x.rule ->> 'field',
           coalesce(x.rule -> 'value', 'null'::json)::jsonb
    from retried as r
    cross join lateral json_array_elements(r.cancel_on) as x(rule)
    where r.cancel_on is not null
),
notified as (
    select pg_notify(%(channel)s, q.queue) from (select distinct queue from retried) as q
)
select id::text, (select count(*) from notified) from retried
""")


RETRY_ONE = _retry("select %(id)s::uuid")

FORK_SOURCE = compact("""
select coalesce((select json_agg(s.name order by s.id) from steps as s where s.run_id = r.id),
                '[]'::json)::text
from runs as r
where r.id = %(source)s::uuid
""")

# The memo of the source up to (not including) ``before``, in memo order; its timings
# (and the attempt of the source that ran each step) too.
FORK_COPY = compact("""
with marked as (update runs set forked_from = %(source)s::uuid where id = %(id)s::uuid)
insert into steps (run_id, name, kind, output, error, finished_at, started_at, duration,
                   attempt)
select %(id)s::uuid, s.name, s.kind, s.output, s.error, s.finished_at, s.started_at,
       s.duration, s.attempt
from steps as s
where s.run_id = %(source)s::uuid
  and s.id < (select id from steps where run_id = %(source)s::uuid and name = %(before)s)
order by s.id
""")

LOCK_IDS = "select id from runs where id = any(%(ids)s::uuid[]) order by id for update"

NOTIFY_QUEUE = "select pg_notify(%(channel)s, %(queue)s)"


def where(
    f: RunFilter, *, after: RunId | None = None, clock: datetime | None = None
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (over ``runs as r``) and parameters of a filter; parameters are
    named ``f_*`` so that they never collide with those of the statement around it.

    A time window filters ``created_at`` exactly, and also bounds ``r.id`` (run ids are
    UUIDv7: see ``id_window``) so that the planner reads only that range of the primary
    key. Not with a store ``clock`` (tests): created_at is then the clock's time, which no
    id was made from."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if f.status is not None:
        clauses.append("r.status = any(%(f_status)s::text[])")
        params["f_status"] = list(f.status)
        if set(f.status) <= {"failed", "cancelled"}:
            # implies runs_failed_listed's predicate, in every plan (a bound value does not)
            clauses.append(f"r.status in {RETRYABLE}")
    for name, column in (("event", "event"), ("queue", "queue")):
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"r.{column} = %(f_{name})s")
            params[f"f_{name}"] = value
    if f.parent is not None:
        clauses.append("r.parent_run_id = %(f_parent)s::uuid")
        params["f_parent"] = f.parent
    if f.since is not None:
        clauses.append("r.created_at >= %(f_since)s::timestamptz")
        params["f_since"] = f.since
    if f.since_ago is not None:
        clauses.append(f"r.created_at >= {NOW} - %(f_since_ago)s::interval")
        params["f_since_ago"] = f.since_ago
    if f.until is not None:
        clauses.append("r.created_at < %(f_until)s::timestamptz")
        params["f_until"] = f.until
    if f.until_ago is not None:
        clauses.append(f"r.created_at < {NOW} - %(f_until_ago)s::interval")
        params["f_until_ago"] = f.until_ago
    if f.data is not None:
        # the expression of the runs_data index, exactly
        clauses.append("(r.data::jsonb) @> %(f_data)s::jsonb")
        params["f_data"] = dump(f.data)
    if clock is None and (f.since, f.since_ago, f.until, f.until_ago) != (None,) * 4:
        low_id, high_id = id_window(*window(f, datetime.now(UTC)))
        if low_id is not None:
            clauses.append("r.id >= %(f_low_id)s::uuid")
            params["f_low_id"] = low_id
        if high_id is not None:
            clauses.append("r.id < %(f_high_id)s::uuid")
            params["f_high_id"] = high_id
    if after is not None:
        clauses.append("r.id < %(f_after)s::uuid")
        params["f_after"] = after
    return " and ".join(clauses) or "true", params


def list_query(condition: str) -> str:
    """A page of runs, newest first by id: run ids are UUIDv7, so this reads the primary
    key backwards (and a cursor, the last id, is where the next page starts)."""
    return compact(f"""
        select {_LISTED}, r.id::text from runs as r
        where {condition}
        order by r.id desc
        limit %(limit)s
    """)


async def list_runs(
    conn: AsyncConnection[Any], f: RunFilter, *, limit: int, cursor: str | None, now: Any
) -> RunPage:
    after = decode_cursor(cursor) if cursor is not None else None
    condition, params = where(f, after=after, clock=now)
    query = list_query(condition)
    cursor_ = await conn.execute(query, params | {"limit": limit + 1, "now": now})
    rows = await cursor_.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1][1]) if more else None
    return RunPage(runs=[_run_info.decode(row[0]) for row in rows], next_cursor=next_cursor)


async def audit(
    conn: AsyncConnection[Any],
    *,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any],
    now: datetime | None,
) -> None:
    params = {"actor": actor, "action": action, "target": target, "detail": dump(detail)}
    await conn.execute(AUDIT, params | {"now": now})


async def list_audit(conn: AsyncConnection[Any], limit: int) -> list[AuditEntry]:
    cursor = await conn.execute(LIST_AUDIT, {"limit": limit})
    return [
        AuditEntry(
            at=at,
            actor=actor,
            action=action,
            target=target,
            detail=None if d is None else msgspec.json.decode(d),
        )
        for at, actor, action, target, d in await cursor.fetchall()
    ]


async def retry_run(
    conn: AsyncConnection[Any], run_id: RunId, *, actor: str, now: datetime | None, channel: str
) -> None:
    async with conn.transaction():
        row = await (await conn.execute(RUN_STATUS, {"id": run_id})).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run has id {run_id!r}")
        if row[0] not in ("failed", "cancelled"):
            raise InputError(
                f"run {run_id} is {row[0]}: only a failed or cancelled run can be retried"
            )
        await conn.execute(RETRY_ONE, {"id": run_id, "now": now, "channel": channel})
        detail = {"status": row[0]}
        await audit(conn, actor=actor, action="retry", target=run_id, detail=detail, now=now)


async def fork_run(
    conn: AsyncConnection[Any],
    run: NewRun,
    *,
    source: RunId,
    before_step: str | None,
    actor: str,
    now: datetime | None,
    channel: str,
) -> RunId:
    async with conn.transaction():
        row = await (await conn.execute(FORK_SOURCE, {"source": source})).fetchone()
        if row is None:
            raise RunNotFoundError(f"no run has id {source!r}")
        names: list[str] = msgspec.json.decode(row[0])
        if before_step is not None and before_step not in names:
            raise InputError(
                f"run {source} has no step {before_step!r} to rerun from; its steps: {names}"
            )
        await conn.execute(INSERT_RUNS, run_rows([(0, run, None)]) | {"now": now})
        params = {"id": run.id, "source": source, "before": before_step}
        await conn.execute(FORK_COPY, params)
        detail = {"run_id": run.id, "from_step": before_step}
        await audit(conn, actor=actor, action="rerun", target=source, detail=detail, now=now)
        await conn.execute(NOTIFY_QUEUE, {"channel": channel, "queue": run.queue})
    return run.id


async def count(conn: AsyncConnection[Any], f: RunFilter, eligible: str, now: Any) -> int:
    condition, params = where(f, clock=now)
    query = f"select count(*) from runs as r where {condition} and r.status in {eligible}"
    row = await (await conn.execute(query, params | {"now": now})).fetchone()
    return int(row[0]) if row else 0


class Bulk:
    """A bulk action in batches: each batch a transaction of its own, so that millions of
    runs never sit in one. Candidates are read newest first by id, below the previous
    batch (runs stored meanwhile have newer ids, and are left alone), then locked in id
    order (as every multi-run lock is taken) and changed only if they still match the
    filter and the action's statuses: a run that changed meanwhile is skipped."""

    def __init__(
        self, f: RunFilter, *, action: str, actor: str, now: datetime | None, channel: str
    ) -> None:
        check_filter(f)
        self.filter = f
        self.action = action
        self.actor = actor
        self.now = now
        self.channel = channel
        self.eligible = RETRYABLE if action == "retry_runs" else UNFINISHED
        self.after: RunId | None = None
        self.done = 0

    async def batch(self, conn: AsyncConnection[Any]) -> bool:
        """Change the next batch; False once there is none left (the audit row is written
        with the last batch, in its transaction)."""
        condition, params = where(self.filter, after=self.after, clock=self.now)
        params |= {"now": self.now, "channel": self.channel}
        page = compact(f"""
            select r.id::text from runs as r
            where {condition} and r.status in {self.eligible}
            order by r.id desc
            limit {BULK_BATCH}
        """)
        rows = await (await conn.execute(page, params)).fetchall()
        ids = [row[0] for row in rows]
        still, _ = where(self.filter, clock=self.now)
        targets = (
            f"select r.id from runs as r where r.id = any(%(ids)s::uuid[]) and {still}"
            f" and r.status in {self.eligible}"
        )
        changed = 0
        async with conn.transaction():
            if ids:
                await conn.execute(LOCK_IDS, {"ids": ids})
                changed = await self._apply(conn, targets, params | {"ids": ids})
            if len(ids) < BULK_BATCH:
                detail = {"count": self.done + changed}
                target = describe_filter(self.filter)
                await audit(
                    conn,
                    actor=self.actor,
                    action=self.action,
                    target=target,
                    detail=detail,
                    now=self.now,
                )
        # counted once committed: a batch that lost a deadlock runs again whole
        self.done += changed
        if len(ids) < BULK_BATCH:
            return False
        self.after = RunId(ids[-1])
        return True

    async def _apply(self, conn: AsyncConnection[Any], targets: str, params: dict[str, Any]) -> int:
        if self.action == "retry_runs":
            changed = await conn.execute(_retry(targets), params)
            return len(await changed.fetchall())
        finish = {"status": "cancelled", "result": None, "error": None}
        cancelled = await conn.execute(finish_runs(targets), params | finish)
        ids = [row[0] for row in await cancelled.fetchall()]
        if ids:
            base = {"ids": ids, "now": self.now, "channel": self.channel}
            await conn.execute(LOCK_PARENTS, base)
            await conn.execute(RESOLVE_PARENTS, base | {"seq": None, "cancelled": dump(CANCELLED)})
        return len(ids)
