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
