"""The tick function: a batch's commits and a claim, with everything the claim's rows
call for, in one PL/pgSQL function called by one statement (``_tick``).

Sent one by one, a tick's statements cost a round trip for the claim's rows to come
back (its follow-ups depend on them) and psycopg's and PostgreSQL's fixed cost per
statement: ~1.3 ms of CPU per tick, for ten no-op runs that cost ~1.4 ms more (see
docs/claiming.md). The function runs the same statements, made from the same text as
the rest of this package: each ``%(name)s`` is bound to the function's argument
``p_name``, or to a variable the function computed (``bound``). Its name carries a hash
of its text (``TICK``), and ``_migrations`` installs it when the database lacks it, so
a change to any statement it runs installs a new function, and processes of the old
version keep calling theirs until they stop.

Its plans are made once per connection, generic (the function's settings), without
sequential or bitmap scans: as ``INDEXED_PLANS`` sets for the statements sent one by one,
and for the same reasons (see there). Each statement in it takes a fresh snapshot, as a
statement sent alone does, so the module rule on locking in one statement and reading
in a later one holds inside it too.

What the claim's rows call for (the ended attempts of runs taken over or doomed, the
doomed runs failed, the pending steps of resumed runs expired) is a second function,
``FOLLOW_UP_NAME``, installed with it and under the same hash: the tick function calls
it when a claimed row needs it, and the claim of gated runs, decided in Python
(``_claim``), calls it with its own rows (``FOLLOW_UP``), so both claims follow up the
same way.

Rows out, by ``t_kind``: ``commit`` (one per transition of the batch, as
``COMMIT_BATCH_ROWS``), ``claim`` (one per claimed run, with its memo if it resumes),
``gated`` (the claim's queues that have had gated runs: flow control claims those after
the tick, with the slots left, ``_tick``, ``_flow_claim``).
"""

from __future__ import annotations

import hashlib
import re

from slayq.store.postgres.sql.claiming import (
    CLAIM_COLUMNS,
    CLAIM_CTES,
    CLAIM_ORDER,
    CLAIM_ROWS,
    EXPIRE_PENDING,
    STEP_JSON,
    end_expired,
)
from slayq.store.postgres.sql.committing import (
    COMMIT_BATCH_CTES,
    COMMIT_BATCH_ROWS,
)
from slayq.store.postgres.sql.common import QUEUE_LOCKS
from slayq.store.postgres.sql.finishing import FINISH_IDS, LOCK_PARENTS, RESOLVE_PARENTS

# The function's arguments, in order: a tick's parameters, as ``_tick`` passes them.
ARGUMENTS = (
    # the batch (``_batch.batch_params``); runs is null without commits
    ("runs", "json"),
    ("steps", "json"),
    ("naps", "json"),
    ("claiming", "text[]"),  # the queues this tick claims from (they go unnotified)
    ("claim_all", "boolean"),
    # the claim (``_claim.group_params``); limit 0: no claim
    ("locks", "text[]"),  # the queues to lock (those of the claim's groups)
    ("member_queues", "text[]"),
    ("member_groups", "int[]"),
    ("route_queues", "text[]"),
    ("route_groups", "int[]"),
    ("concurrency", "int[]"),
    ("all", "boolean"),
    ("limit", "int"),
    ("lease_for", "interval"),
    ("owner", "text"),
    # and what every statement may use
    ("now", "timestamptz"),
    ("channel", "text"),
    ("lease_expired", "json"),
    ("cancelled", "json"),
)

# The arguments of the follow-up function after its rows (those its statements use).
FOLLOW_UP_ARGUMENTS = ("now", "channel", "lease_expired", "cancelled")

# A claimed run's columns in the function's rows (of those of ``CLAIM_COLUMNS``), in
# the order ``_tick`` reads them; its memo follows them.
CLAIMED = (
    "id",
    "lease_token",
    "lease_expires_at",
    "event",
    "data",
    "queue",
    "attempt",
    "max_attempts",
    "endpoint",
    "previous_owner",
    "trace",
    "due_at",
)

# Every row out has every column; a row of one kind leaves the others null.
RESULT = (
    ("kind", "text"),
    ("idx", "int"),
    ("held", "boolean"),
    ("parented", "boolean"),
    ("notified", "bigint"),
    ("gated", "text[]"),
    *((name, dict(CLAIM_COLUMNS)[name]) for name in CLAIMED),
    ("memo", "text"),
)

_PARAMETER = re.compile(r"%\((\w+)\)s")


def bound(statement: str, **values: str) -> str:
    """``statement`` with each ``%(name)s`` replaced by ``values[name]`` (an expression
    over the function's variables), else by the argument ``p_name``."""
    arguments = {name for name, _type in ARGUMENTS}

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name in values:
            return values[name]
        if name not in arguments:
            raise KeyError(f"the tick function has no argument or value for %({name})s")
        return f"p_{name}"

    return _PARAMETER.sub(one, statement).replace("%%", "%")


def _nulls(*kinds: str) -> str:
    return ", ".join(f"null::{kind}" for kind in kinds)


# The ended attempts of the runs the claim took over or doomed (see ``end_expired``).
_ENDED = """select c.id::uuid, case when c.lease_token is not null then c.attempt - 1 end,
       case when c.lease_token is not null then c.previous_owner end,
       c.lease_token is not null
from unnest(p_rows) as c
where c.lease_token is null or c.previous_owner is not null"""

# Doomed runs whose failure answers their caller: a caller claimed before (in claim
# order) had its pending steps resolve to null at its claim, so it is not answered.
_ANSWERING = """array(
    select c.id::uuid from unnest(p_rows) with ordinality as c
    where c.lease_token is null and not exists (
        select 1 from unnest(p_rows) with ordinality as e
        where e.lease_token is not null and e.id = c.parent and e.ordinality < c.ordinality
    )
)"""

# Whether claim rows ``rows`` call for the follow-up: a run taken over, doomed, or
# resuming with pending steps (most claimed runs are none of these).
_CALL_FOR_FOLLOW_UP = """exists (
    select 1 from unnest({rows}) as c
    where c.lease_token is null or c.previous_owner is not null or c.has_pending is not null
)"""

_MEMO = f"""case when c.has_steps is not null or c.has_pending is not null then (
    select json_agg({STEP_JSON} order by s.id)::text from steps as s where s.run_id = c.id::uuid
) end"""

_GATED = """array(
    select f.queue from flow_queues as f
    where (p_all or f.queue = any(p_route_queues))
      and f.queue not in (select queue from paused_queues)
    order by f.queue
)"""


def _follow_up_body() -> str:
    """What a claim's rows (``p_rows``, in claim order) call for: the ended attempts of
    runs taken over or doomed, the doomed runs failed (answering their callers), the
    pending steps of resumed runs expired. The tick function calls it for the plain
    claim, ``_claim`` for a claim of gated runs."""
    return f"""
declare
    v_row record;  -- a statement's first row, unread: its work is in its CTEs
    v_ids uuid[];
begin
    if exists (select 1 from unnest(p_rows) as c
               where c.lease_token is null or c.previous_owner is not null) then
        {bound(end_expired(_ENDED))} into v_row;
    end if;

    v_ids := array(select c.id::uuid from unnest(p_rows) as c where c.lease_token is null);
    if v_ids <> '{{}}' then
        {bound(FINISH_IDS, ids="v_ids", status="'failed'", result="null", error="p_lease_expired")}
        into v_row;
        v_ids := {_ANSWERING};
        if v_ids <> '{{}}' then
            perform count(*) from ({bound(LOCK_PARENTS, ids="v_ids")}) as locked;
            {bound(RESOLVE_PARENTS, ids="v_ids")} into v_row;
        end if;
    end if;

    v_ids := array(select c.id::uuid from unnest(p_rows) as c
                   where c.lease_token is not null and c.has_pending is not null);
    if v_ids <> '{{}}' then
        {bound(EXPIRE_PENDING, ids="v_ids")};
    end if;
end
"""


def _body(row_type: str, follow_up: str) -> str:
    claim_columns = ", ".join(f"c.{name}" for name, _type in CLAIM_COLUMNS)
    return f"""
declare
    v_rows {row_type}[];
begin
    -- the claim's queue locks, exclusive, in key order (as LOCK_NAMES takes them)
    perform count(pg_advisory_xact_lock({QUEUE_LOCKS}, hashtext(t.name)))
    from (select * from unnest(p_locks) as u(name) order by hashtext(u.name), u.name) as t;

    if p_runs is not null then
        return query
        with {bound(COMMIT_BATCH_CTES)}
        select 'commit'::text, r.*, {_nulls(*(kind for _name, kind in RESULT[5:]))}
        from ({bound(COMMIT_BATCH_ROWS)}) as r(idx, held, parented, notified)
        order by r.idx;
    end if;

    if p_limit <= 0 then
        return;
    end if;

    with recursive {bound(CLAIM_CTES)}, claim_rows as ({bound(CLAIM_ROWS)})
    select coalesce(array_agg(row({claim_columns})::{row_type} order by {CLAIM_ORDER}), '{{}}')
    from claim_rows as c
    into v_rows;

    if {_CALL_FOR_FOLLOW_UP.format(rows="v_rows")} then
        perform {follow_up}(v_rows, {", ".join(f"p_{name}" for name in FOLLOW_UP_ARGUMENTS)});
    end if;

    return query select 'gated'::text, {_nulls("int", "boolean", "boolean", "bigint")},
        g.queues, {_nulls(*(kind for _name, kind in RESULT[6:]))}
    from (select {_GATED} as queues) as g
    where g.queues <> '{{}}';

    return query
    select 'claim'::text, {_nulls("int", "boolean", "boolean", "bigint", "text[]")},
           {", ".join(f"c.{name}" for name in CLAIMED)}, {_MEMO}
    from unnest(v_rows) with ordinality as c
    where c.lease_token is not null
    order by c.ordinality;
end
"""


def _routine() -> tuple[str, str, str]:
    # The hash is of the bodies with placeholders for the names it makes from it.
    follow_up_body = _follow_up_body()
    digest = hashlib.sha256(
        (_body("{row_type}", "{follow_up}") + follow_up_body).encode()
    ).hexdigest()[:12]
    name = f"tick_{digest}"
    row_type = f"{name}_row"
    follow_up = f"{name}_follow_up"
    arguments = ", ".join(f"p_{arg} {kind}" for arg, kind in ARGUMENTS)
    kinds = dict(ARGUMENTS)
    follow_up_arguments = ", ".join(
        [f"p_rows {row_type}[]", *(f"p_{arg} {kinds[arg]}" for arg in FOLLOW_UP_ARGUMENTS)]
    )
    result = ", ".join(f"t_{column} {kind}" for column, kind in RESULT)
    claim_row = ", ".join(f"{column} {kind}" for column, kind in CLAIM_COLUMNS)
    settings = """set search_path from current
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off"""
    ddl = f"""
create type {row_type} as ({claim_row});
create function {follow_up}({follow_up_arguments})
returns void
language plpgsql
{settings}
as $follow_up$
#variable_conflict use_column
{follow_up_body}
$follow_up$;
create function {name}({arguments})
returns table({result})
language plpgsql
{settings}
as $tick$
#variable_conflict use_column
{_body(row_type, follow_up)}
$tick$;
"""
    return name, follow_up, ddl


TICK_NAME, FOLLOW_UP_NAME, TICK_DDL = _routine()

# The call: one statement, one round trip, for the whole tick.
TICK = f"select * from {TICK_NAME}({', '.join(f'%({a})s::{k}' for a, k in ARGUMENTS)})"

# The follow-up of a claim of gated runs (``_claim``): its rows as JSON documents, in
# claim order, with the columns of ``FOLLOW_UP_COLUMNS``.
FOLLOW_UP_COLUMNS = ("id", "lease_token", "attempt", "previous_owner", "parent", "has_pending")
FOLLOW_UP = f"""select {FOLLOW_UP_NAME}(
    array(select json_populate_record(null::{TICK_NAME}_row, e.doc)
          from json_array_elements(%(rows)s::json) with ordinality as e(doc, n)
          order by e.n),
    {", ".join(f"%({a})s::{dict(ARGUMENTS)[a]}" for a in FOLLOW_UP_ARGUMENTS)})"""
