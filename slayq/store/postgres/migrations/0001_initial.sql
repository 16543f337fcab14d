-- The first slayq schema. The migration runner creates the schema and sets search_path
-- to it, so names here are unqualified. Statuses are text with a check: an enum would
-- need a migration of its own to grow.

create sequence lease_tokens as bigint;

create table runs (
    id uuid primary key,
    -- tie-breaker for runs due at the same instant: the order they were created in
    seq bigint generated always as identity,
    event text not null,
    data jsonb not null,
    queue text not null,
    priority integer not null default 0,
    max_attempts integer not null,
    attempt integer not null default 1,
    status text not null default 'queued' check (
        status in ('queued', 'running', 'sleeping', 'waiting', 'completed', 'failed', 'cancelled')
    ),
    key text,
    parent_run_id uuid,
    parent_step text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    run_at timestamptz,
    -- the last logged event this run has seen (see events): a wait looks past it
    event_cursor bigint not null default 0,
    lease_token bigint,
    lease_owner text,
    lease_expires_at timestamptz,
    result jsonb,
    error jsonb,
    finished_at timestamptz
) with (fillfactor = 80);  -- room for HOT updates: a run row is updated on every commit

create unique index runs_event_key on runs (event, key) where key is not null;
-- claim and next_wakeup: a loose scan over (queue, priority), then due runs in order
create index runs_due on runs (queue, priority, run_at, seq)
    where status in ('queued', 'sleeping', 'waiting');
-- concurrency counts and lease takeover
create index runs_leased on runs (queue, lease_expires_at) where status = 'running';
create index runs_finished on runs (finished_at) where finished_at is not null;

create table steps (
    run_id uuid not null references runs (id) on delete cascade,
    name text not null,
    -- memo order: the order steps were recorded in
    id bigint generated always as identity,
    kind text not null,
    output jsonb,
    error jsonb,
    finished_at timestamptz not null,
    primary key (run_id, name)
);

create table pending (
    run_id uuid not null references runs (id) on delete cascade,
    name text not null,
    pos integer not null,
    kind text not null,
    event text,
    match_field text,
    match_value jsonb,
    expires_at timestamptz,
    -- the PendingStep as given, for get_run
    spec jsonb not null,
    primary key (run_id, name)
);

-- An event finds its waiters by (name, field, value) for each field of its data.
create index pending_waits on pending (event, match_field, match_value) where kind = 'wait';

-- Only unfinished runs keep their rules: finishing a run deletes them.
create table cancel_rules (
    run_id uuid not null references runs (id) on delete cascade,
    event text not null,
    field text not null,
    value jsonb not null
);

create index cancel_rules_match on cancel_rules (event, field, value);
create index cancel_rules_run on cancel_rules (run_id);

-- The log of events that some function waits for, so that a wait registered a moment
-- after its event was sent still sees it.
create table events (
    seq bigint generated always as identity primary key,
    name text not null,
    data jsonb not null,
    created_at timestamptz not null
);

create index events_name on events (name, seq);

create table schedules (
    event text primary key,
    cron text not null,
    template jsonb not null,
    next_at timestamptz not null
);
