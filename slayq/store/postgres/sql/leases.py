"""Extending and releasing the leases of runs in flight."""

from __future__ import annotations

from slayq.store.postgres.sql.attempts import CURRENT, ended_attempt
from slayq.store.postgres.sql.common import HELD, NOW, compact

# Run by run, by primary key, fenced as HELD is (see there), locked in id order.
EXTEND = compact(f"""
with held as (
    select r.id
    from (select * from unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) as t(id, token)
          order by id) as t
    cross join lateral (
        select id from runs
        where id = t.id and status collate "C" = 'running' and lease_token = t.token
        for update
    ) as r
)
update runs as r set lease_expires_at = {NOW} + %(lease_for)s::interval, heartbeat_at = {NOW}
where r.id in (select id from held)
returning r.id::text, r.lease_token, r.lease_expires_at
""")

# ``error`` takes the column's own type (json or jsonb): the parameter is left untyped.
RELEASE = compact(f"""
with ending as (select {CURRENT} from runs where id = %(id)s::uuid and {HELD} for update),
{ended_attempt("ending", "'released'", "%(error)s::json", now=NOW)},
released as (
    update runs set status = 'queued', run_at = {NOW} + coalesce(%(delay)s::interval, '0'),
        error = coalesce(%(error)s, error), lease_expires_at = null,
        lease_owner = null, updated_at = {NOW},
        attempt_started_at = null, attempt_replayed = 0, attempt_executed = 0
    where id in (select id from ending)
    returning queue, run_at
)
select count(pg_notify(%(channel)s, queue)) from released where run_at <= {NOW}
""")
