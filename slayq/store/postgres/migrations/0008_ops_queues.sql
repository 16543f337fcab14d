-- Operations on queues and workers.

-- Operator actions, one row each (the migration that adds run actions creates the same
-- table: whichever runs first creates it).
create table if not exists audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null,
    actor text not null,
    action text not null,
    target text,
    detail json
);

-- A paused queue is not claimed by any process. Claims read this table once per
-- statement (a hashed subplan): a few rows at most.
create table paused_queues (
    queue text primary key,
    paused_at timestamptz not null,
    paused_by text not null
);

-- When the lease holder last took or renewed the run's lease: list_workers shows a
-- stopped worker by its old heartbeat. Written by the claim and the lease extension in
-- their own statements; not indexed, so the update stays HOT-eligible.
alter table runs add column heartbeat_at timestamptz;

-- list_queues splits the runs that are not due yet into waiting and sleeping ones. runs_due
-- (which holds them all) does not hold the status: counting by status from the table
-- read 400,000 heap pages for a million runs. Waiting runs get an index of their own, so
-- every count is read from indexes alone. A run enters it only when it suspends on a wait
-- or an invocation (its status changes then, so the update is not HOT anyway).
create index runs_waiting on runs (queue, priority, run_at) where status = 'waiting';
