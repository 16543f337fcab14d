"""Reading runs: one run, its flow state, when something is due next, due runs by queue."""

from __future__ import annotations

from slayq.store.postgres.sql.attempts import HISTORY_JSON, STEP_INFO_JSON
from slayq.store.postgres.sql.claiming import PAIRS
from slayq.store.postgres.sql.common import NOW, TIMED, compact

GET_RUN = compact(f"""
select json_build_object(
    'id', r.id, 'event', r.event, 'queue', r.queue, 'status', r.status, 'data', r.data,
    'attempts', r.attempt, 'max_attempts', r.max_attempts,
    'steps', coalesce(
        (select json_agg({STEP_INFO_JSON} order by s.id) from steps as s where s.run_id = r.id),
        '[]'::json),
    'pending', coalesce(
        (select json_agg(p.spec order by p.pos) from pending as p where p.run_id = r.id),
        '[]'::json),
    'created_at', r.created_at, 'updated_at', r.updated_at, 'run_at', r.run_at,
    'result', r.result, 'error', r.error, 'priority', r.priority, 'key', r.key,
    'parent', case when r.parent_run_id is not null then
        json_build_object('run_id', r.parent_run_id, 'step', r.parent_step) end,
    'finished_at', r.finished_at, 'endpoint', r.endpoint, 'history', {HISTORY_JSON},
    'forked_from', r.forked_from, 'flow', r.flow
)::text
from runs as r
where r.id = %(id)s::uuid
""")

# What may hold back a run under flow control (see RunInfo.held_back): per concurrency
# bucket of it, the runs of its queue holding a lease (as the claim counts them), its
# throttle's state if it is a first start (no lease token yet), and the store's now.
FLOW_STATE = compact(f"""
select
    (select coalesce(json_object_agg(b.bucket, (
        select count(*) from runs as h
        cross join lateral json_array_elements(h.flow -> 'concurrency') as c(slot)
        where h.queue = r.queue and h.status = 'running' and h.gated
          and h.lease_expires_at > {NOW} and c.slot ->> 'bucket' = b.bucket)), '{{}}')
     from (select s ->> 'bucket' as bucket
           from json_array_elements(r.flow -> 'concurrency') as s) as b)::text,
    (select t.tat from flow_throttles as t
     where r.lease_token is null and t.bucket = r.flow -> 'throttle' ->> 'bucket'),
    {NOW}
from runs as r
where r.id = %(id)s::uuid
""")

RUN_FOR_UPDATE = "select id from runs where id = %(id)s::uuid for update"

# Gated runs (flow control) count from their due time only while it is ahead: one due
# now and not claimed waits for a slot (freed by a commit, which notifies, or by a lease
# expiring, counted here) or for its throttle (flow_throttles.blocked_until).
NEXT_WAKEUP = compact(f"""
with recursive {PAIRS}
select least(
    (select min(next_at) from schedules),
    (select min(lease_expires_at) from runs
     where status = 'running' and queue not in (select queue from paused_queues)),
    (select min(least(plain.run_at, gated.run_at))
     from pairs as p
     left join lateral (
         select run_at from runs
         where queue = p.queue and priority = p.priority and status in {TIMED} and not gated
           and run_at is not null
         order by run_at
         limit 1
     ) as plain on true
     left join lateral (
         select run_at from runs
         where queue = p.queue and priority = p.priority and status in {TIMED} and gated
           and run_at > {NOW}
         order by run_at
         limit 1
     ) as gated on true
     where p.queue not in (select queue from paused_queues)),
    (select min(blocked_until) from flow_throttles where blocked_until > {NOW})
)
""")

# Due but unclaimed runs per queue, to spot queues that nobody serves: per (queue,
# priority) pair, plain and gated, only the due entries of runs_due are read, not the
# sleeping ones.
DUE_BY_QUEUE = compact(f"""
with recursive {PAIRS}
select p.queue, sum(due.n)::bigint
from pairs as p
cross join (values (false), (true)) as g(gated)
cross join lateral (
    select count(*) as n from runs
    where queue = p.queue and priority = p.priority and status in {TIMED}
      and gated = g.gated and run_at <= {NOW}
) as due
group by p.queue
having sum(due.n) > 0
""")
