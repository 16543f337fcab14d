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
from unnest(v_rows) as c
where c.lease_token is null or c.previous_owner is not null"""

# Doomed runs whose failure answers their caller: a caller claimed before (in claim
# order) had its pending steps resolve to null at its claim, so it is not answered.
_ANSWERING = """array(
    select c.id::uuid from unnest(v_rows) with ordinality as c
    where c.lease_token is null and not exists (
        select 1 from unnest(v_rows) with ordinality as e
        where e.lease_token is not null and e.id = c.parent and e.ordinality < c.ordinality
    )
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


def _body(row_type: str) -> str:
    claim_columns = ", ".join(f"c.{name}" for name, _type in CLAIM_COLUMNS)
    return f"""
declare
    v_rows {row_type}[];
    v_row record;  -- a statement's first row, unread: its work is in its CTEs
    v_ids uuid[];
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

    if exists (select 1 from unnest(v_rows) as c
               where c.lease_token is null or c.previous_owner is not null) then
        {bound(end_expired(_ENDED))} into v_row;
    end if;

    v_ids := array(select c.id::uuid from unnest(v_rows) as c where c.lease_token is null);
    if v_ids <> '{{}}' then
        {bound(FINISH_IDS, ids="v_ids", status="'failed'", result="null", error="p_lease_expired")}
        into v_row;
        v_ids := {_ANSWERING};
        if v_ids <> '{{}}' then
            perform count(*) from ({bound(LOCK_PARENTS, ids="v_ids")}) as locked;
            {bound(RESOLVE_PARENTS, ids="v_ids")} into v_row;
        end if;
    end if;

    v_ids := array(select c.id::uuid from unnest(v_rows) as c
                   where c.lease_token is not null and c.has_pending is not null);
    if v_ids <> '{{}}' then
        {bound(EXPIRE_PENDING, ids="v_ids")};
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


def _routine() -> tuple[str, str]:
    # The hash is of the body with placeholders for the names it makes from it.
    body = _body("{row_type}")
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    name = f"tick_{digest}"
    row_type = f"{name}_row"
    arguments = ", ".join(f"p_{arg} {kind}" for arg, kind in ARGUMENTS)
    result = ", ".join(f"t_{column} {kind}" for column, kind in RESULT)
    claim_row = ", ".join(f"{column} {kind}" for column, kind in CLAIM_COLUMNS)
    ddl = f"""
create type {row_type} as ({claim_row});
create function {name}({arguments})
returns table({result})
language plpgsql
set search_path from current
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off
as $tick$
#variable_conflict use_column
{body.replace("{row_type}", row_type)}
$tick$;
"""
    return name, ddl


TICK_NAME, TICK_DDL = _routine()

# The call: one statement, one round trip, for the whole tick.
TICK = f"select * from {TICK_NAME}({', '.join(f'%({a})s::{k}' for a, k in ARGUMENTS)})"
