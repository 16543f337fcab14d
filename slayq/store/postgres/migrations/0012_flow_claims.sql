-- Claim-time flow control: concurrency keys and throttles (see slayq/store/_flow_claims.py
-- and _flow_claim.py). A run under either is *gated*: the claim of plain runs (CLAIM)
-- never takes it and never reads past it; CLAIM_FLOW does, under its limits.

-- Set once, when the run is inserted (by the trigger below), from runs.flow: whether the
-- run is gated, and the bucket it takes its turn in (its first concurrency key, else its
-- throttle's). Constant defaults and nullable columns: no rewrite of the table. Buckets
-- compare byte by byte (collate "C"): claims visit them in the order MemoryStore does.
alter table runs add column gated boolean not null default false;
alter table runs add column flow_key text collate "C";

-- The queues that have ever had a gated run: a claim of other queues never looks further
-- for gated runs (a few rows, read once per claim). ``cursor``: the last bucket a claim
-- of the queue took a run from; the next claim starts after it (round robin).
create table flow_queues (queue text primary key, cursor text collate "C");

-- A throttle's GCRA state: its theoretical arrival time, and until when a first start
-- is held back (claims skip the bucket's first starts until then; next_wakeup reads the
-- earliest). Kept while in use: delete_finished drops the idle ones.
create table flow_throttles (
    bucket text primary key,
    tat timestamptz not null,
    blocked_until timestamptz
);
create index flow_throttles_blocked on flow_throttles (blocked_until)
    where blocked_until is not null;
create index flow_throttles_idle on flow_throttles (tat);

-- A trigger, so every way a run is inserted (sent, invoked, fired by a schedule, rerun)
-- gets the columns without its statement knowing; plain runs (flow is null) skip it.
create function flow_gate() returns trigger
    language plpgsql
    set search_path from current
    as $$
begin
    new.flow_key := coalesce(new.flow -> 'concurrency' -> 0 ->> 'bucket',
                             new.flow -> 'throttle' ->> 'bucket');
    new.gated := new.flow_key is not null;
    if new.gated then
        insert into flow_queues (queue) values (new.queue) on conflict do nothing;
    end if;
    return new;
end
$$;

create trigger runs_flow_gate before insert on runs
    for each row when (new.flow is not null) execute function flow_gate();

-- Gated runs inserted before this migration (by 0011's column).
update runs set flow_key = coalesce(flow -> 'concurrency' -> 0 ->> 'bucket',
                                    flow -> 'throttle' ->> 'bucket')
where flow is not null and status not in ('completed', 'failed', 'cancelled');
update runs set gated = true where flow_key is not null;
insert into flow_queues (queue) select distinct queue from runs where gated
on conflict do nothing;

-- runs_due keeps every timed run, gated ones after the plain ones of each (queue,
-- priority): CLAIM reads the plain ones only (gated = false is part of its index
-- condition), so a million gated runs cost it nothing. The key is no wider on disk:
-- the boolean fits in the padding before run_at.
drop index runs_due;
create index runs_due on runs (queue, priority, gated, run_at, seq)
    where status in ('queued', 'sleeping', 'waiting');

-- FLOW_CANDIDATES: the buckets of a queue that have timed runs (a loose scan over flow_key),
-- then each bucket's first due runs, its first starts (never claimed: no lease token
-- yet) apart from the others. Only claims set lease_token, and they change the status
-- too: indexing it costs no update its HOT (the lease extension's, say).
create index runs_flow_keys on runs (queue, flow_key, (lease_token is null), run_at, seq)
    where status in ('queued', 'sleeping', 'waiting') and gated;

-- Whether a queue has gated runs due: the earliest due time, one probe. "run_at is not
-- null" keeps the walk's loose scan (which names no run_at) off this index.
create index runs_flow_due on runs (queue, run_at)
    where status in ('queued', 'sleeping', 'waiting') and gated and run_at is not null;

-- The gated runs holding a lease, by queue: their slots, and the leases that ran out.
create index runs_flow_leased on runs (queue, lease_expires_at) where status = 'running' and gated;
