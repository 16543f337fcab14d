-- Attempt history and step timings.
--
-- The runs row carries the current attempt: when it started (set by the claim, cleared
-- when the attempt ends, so it is set exactly while one runs) and what it did so far
-- (memo records replayed, steps executed; every commit adds to them). The statement that
-- ends an attempt (a commit that finishes, retries or suspends the run, a release, a
-- cancel, a claim taking over an expired lease) writes its row to attempts, in that same
-- statement: no extra round trip. Constant defaults need no rewrite of the table.
alter table runs
    add column attempt_started_at timestamptz,
    add column attempt_replayed integer not null default 0,
    add column attempt_executed integer not null default 0;

-- Runs held while this migration runs: their attempt started no later than their row
-- last changed.
update runs set attempt_started_at = updated_at where status = 'running';

create table attempts (
    run_id uuid not null references runs (id) on delete cascade,
    number integer not null,
    started_at timestamptz not null,
    ended_at timestamptz not null,
    owner text,
    outcome text not null check (
        outcome in ('completed', 'failed', 'retrying', 'suspended', 'lease_expired',
                    'cancelled', 'released')
    ),
    error json,
    replayed integer not null,
    executed integer not null,
    -- the order attempts ended in; several entries may share a number (a run that
    -- suspends or is released goes on with the same attempt number). Last, so that
    -- inserts may name no columns.
    id bigint generated always as identity,
    primary key (run_id, id)
);

-- Steps: when each began and how long it took (a handler's run as the engine timed it;
-- a sleep, wait or invocation from the suspension to its resolution), and the run's
-- attempt number when it was recorded. Pending steps remember when the run suspended.
alter table steps
    add column started_at timestamptz,
    add column duration interval,
    add column attempt integer;

alter table pending add column started_at timestamptz;
