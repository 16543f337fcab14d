"""Load a large, realistic runs table in seconds: INSERT ... SELECT, not the API.

    python -m bench.bulk_runs --url postgresql://... --finished 1000000 --sleeping 100000

Into a database the loader migrates first (``migrate`` is a no-op when up to date), in
the store's schema (``--schema``, default ``slayq``), it adds:

- ``finished`` runs created over the last ``days`` days, one every few seconds, with
  UUIDv7 ids of their creation time: 90% completed, 7% failed, 3% cancelled, across
  ``EVENTS`` (ten event names in five queues). A quarter of them recorded four steps, the
  others one. Completed runs keep their attempt on the row (as COMMIT_DIRECT leaves it);
  5% of them completed on a second attempt after a retry (one ``attempts`` row). Failed
  runs used up three attempts (two retries, then the failure: three ``attempts`` rows).
  Cancelled runs were cancelled while asleep (one ``suspended`` attempt).
- ``sleeping`` runs due between one hour and thirty days from now: one step done, a
  pending sleep, a ``suspended`` attempt, as the commit that suspended them writes them.
- ``queued`` runs due now (default none), for a claim to have something to take.

Then ANALYZE, so the planner sees the table as a long-running deployment's. Every call
adds rows (ids are salted per call), so loads can be stacked. Returns the counts of rows
written and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from typing import Any

import anyio
import psycopg
from psycopg import sql

from slayq.store.postgres import migrate

# (event, queue): what a small SaaS runs in the background.
EVENTS: list[tuple[str, str]] = [
    ("orders/created", "orders"),
    ("orders/paid", "orders"),
    ("emails/welcome", "emails"),
    ("emails/digest", "emails"),
    ("billing/invoice.issued", "billing"),
    ("billing/charge.failed", "billing"),
    ("users/signup", "default"),
    ("crm/sync", "default"),
    ("reports/nightly", "reports"),
    ("webhooks/stripe", "default"),
]
QUEUES = sorted({queue for _, queue in EVENTS})
STEP_NAMES = ["load-customer", "charge-card", "send-receipt", "sync-crm"]

# One row per run to write, with everything the statements below derive from it. The
# i-th run's id is a UUIDv7 of its creation time (ms), its random part md5(salt || i).
PLAN = """
create temporary table bulk_plan on commit drop as
select i, e.event, e.queue, t.created_at, s.status,
       (lpad(to_hex((extract(epoch from t.created_at) * 1000)::bigint), 12, '0') || '7'
        || substr(h.md5, 1, 3) || '8' || substr(h.md5, 4, 15))::uuid as id,
       case when s.status = 'failed' then 3 when i %% 20 = 3 then 2 else 1 end as attempt,
       case s.status when 'sleeping' then 1 when 'queued' then 0
                     else (case when i %% 4 = 0 then 4 else 1 end) end as nsteps
from generate_series(1, %(count)s) as i
cross join lateral (select md5(%(salt)s || i) as md5) as h
cross join lateral (
    select (%(events)s::text[])[1 + i %% %(nevents)s] as event,
           (%(queues)s::text[])[1 + i %% %(nevents)s] as queue
) as e
cross join lateral (
    select case %(kind)s
        when 'finished' then now() - %(span)s::interval * (1 - i::float8 / %(count)s)
        else now() - interval '1 hour' * (1 - i::float8 / %(count)s) end as created_at
) as t
cross join lateral (
    select case %(kind)s
        when 'finished' then case when i %% 100 < 7 then 'failed'
                                  when i %% 100 < 10 then 'cancelled'
                                  else 'completed' end
        else %(kind)s end as status
) as s
"""

RUNS = """
insert into runs (id, event, data, queue, max_attempts, attempt, status, created_at,
                  updated_at, run_at, result, error, finished_at, lease_token, lease_owner,
                  attempt_started_at, attempt_replayed, attempt_executed, may_wait)
select p.id, p.event,
       json_build_object('order_id', p.i, 'customer',
                         json_build_object('id', p.i %% 50000,
                                           'email', 'customer' || p.i %% 50000 || '@example.com'),
                         'amount_cents', 100 + p.i %% 9900, 'currency', 'EUR'),
       p.queue, 3, p.attempt, p.status, p.created_at, f.at,
       case p.status when 'sleeping' then now() + interval '1 hour'
                                          + (p.i %% 720) * interval '1 hour'
                     when 'queued' then p.created_at end,
       case when p.status = 'completed'
            then json_build_object('ok', true, 'receipt', 'rcpt_' || p.i) end,
       case p.status
           when 'failed' then json_build_object(
               'type', 'PaymentDeclined', 'message', 'card declined (code 51)',
               'traceback', E'Traceback (most recent call last):\n  File "app/billing.py", '
                            'line 42, in charge_card\nPaymentDeclined: card declined',
               'step', 'charge-card')
           when 'cancelled' then json_build_object(
               'type', 'Cancelled', 'message', 'cancelled by orders/refunded')
       end,
       case when p.status in ('completed', 'failed', 'cancelled') then f.at end,
       case when p.status = 'completed' then p.i end,
       case when p.status = 'completed' then 'worker-' || p.i %% 4 || '@app-host' end,
       case when p.status = 'completed' then p.created_at + interval '5 ms' end,
       0,
       case when p.status = 'completed' then p.nsteps else 0 end,
       false
from bulk_plan as p
cross join lateral (
    select p.created_at + interval '5 ms' + p.nsteps * interval '20 ms' as at
) as f
order by p.id
"""

STEPS = """
insert into steps (run_id, name, kind, output, finished_at, started_at, duration, attempt)
select p.id, (%(names)s::text[])[n], 'run',
       json_build_object('ok', true, 'step', n, 'ref', 'ref_' || p.i || '_' || n),
       p.created_at + n * interval '20 ms', p.created_at + n * interval '20 ms' - interval '15 ms',
       interval '15 ms', p.attempt
from bulk_plan as p, generate_series(1, p.nsteps) as n
order by p.id, n
"""

# Attempts that ended before the current one: retries, the failure itself, suspensions.
ATTEMPTS = """
insert into attempts (run_id, number, started_at, ended_at, owner, outcome, error, replayed,
                      executed)
select p.id, a.number, p.created_at + a.number * interval '1 s',
       p.created_at + a.number * interval '1 s' + interval '30 ms', 'worker-0@app-host',
       a.outcome, a.error, 0, case when a.outcome = 'suspended' then 1 else 0 end
from bulk_plan as p
cross join lateral (
    select n as number,
           case when p.status in ('sleeping', 'cancelled') then 'suspended'
                when p.status = 'failed' and n = p.attempt then 'failed'
                else 'retrying' end as outcome,
           case when p.status in ('sleeping', 'cancelled') then null
                else json_build_object('type', 'TimeoutError',
                                       'message', 'upstream timed out after 10s') end as error
    from generate_series(1, case when p.status in ('completed', 'queued') then p.attempt - 1
                                 when p.status in ('sleeping', 'cancelled') then 1
                                 else p.attempt end) as n
) as a
"""

PENDING = """
insert into pending (run_id, name, pos, kind, expires_at, spec, started_at)
select p.id, 'wait-before-reminder', 1, 'sleep', r.run_at,
       json_build_object('name', 'wait-before-reminder', 'kind', 'sleep',
                         'until', r.run_at),
       p.created_at + interval '40 ms'
from bulk_plan as p join runs as r on r.id = p.id
where p.status = 'sleeping'
"""


async def load_runs(
    url: str,
    *,
    finished: int = 0,
    sleeping: int = 0,
    queued: int = 0,
    days: int = 30,
    schema: str = "slayq",
    analyze: bool = True,
) -> dict[str, Any]:
    """Add the runs to the (migrated) database at ``url``; see the module's docstring."""
    await migrate(url, schema=schema)
    began = time.perf_counter()
    written = {"runs": 0, "steps": 0, "attempts": 0, "pending": 0}
    salt = secrets.token_hex(4)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "select set_config('search_path', %s, false),"
            " set_config('synchronous_commit', 'off', false)",
            [schema],
        )
        for kind, count in (("finished", finished), ("sleeping", sleeping), ("queued", queued)):
            if count <= 0:
                continue
            async with conn.transaction():
                await conn.execute(
                    PLAN,
                    {
                        "count": count,
                        "salt": f"{salt}-{kind}-",
                        "kind": kind,
                        "span": f"{days} days",
                        "events": [event for event, _ in EVENTS],
                        "queues": [queue for _, queue in EVENTS],
                        "nevents": len(EVENTS),
                    },
                )
                for table, statement, params in (
                    ("runs", RUNS, {}),
                    ("steps", STEPS, {"names": STEP_NAMES}),
                    ("attempts", ATTEMPTS, {}),
                    ("pending", PENDING, {}),
                ):
                    cursor = await conn.execute(statement, params)
                    written[table] += cursor.rowcount
        # Tokens the loaded runs hold stay below the ones claims hand out next.
        await conn.execute(
            "select setval('lease_tokens', greatest("
            "(select coalesce(max(lease_token), 0) from runs), 1))"
        )
        if analyze:
            for table in ("runs", "steps", "attempts", "pending"):
                await conn.execute(
                    sql.SQL("analyze {}.{}").format(*map(sql.Identifier, (schema, table)))
                )
    return {**written, "seconds": round(time.perf_counter() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SLAY_Q_DATABASE_URL"),
        help="the database to load (default: $SLAY_Q_DATABASE_URL)",
    )
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--sleeping", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=0)
    parser.add_argument("--days", type=int, default=30, help="finished runs span this many days")
    parser.add_argument("--schema", default="slayq")
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url or set SLAY_Q_DATABASE_URL")
    written = anyio.run(
        lambda: load_runs(
            args.url,
            finished=args.finished,
            sleeping=args.sleeping,
            queued=args.queued,
            days=args.days,
            schema=args.schema,
        )
    )
    print(json.dumps(written))


if __name__ == "__main__":
    main()
