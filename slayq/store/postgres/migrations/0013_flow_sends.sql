-- Send-time flow control (slayq/store/postgres/_admit.py and its features). Every row
-- here is read and written under its bucket's advisory lock, by the sending transaction.

-- Idempotency: per bucket, the run its first event was answered with, until expires_at.
-- An expired row decides nothing; delete_finished prunes them by the expiry index.
create table flow_once (
    bucket text primary key,
    run_id uuid not null,
    expires_at timestamptz not null
);
create index flow_once_expiry on flow_once (expires_at);

-- Rate limits: per bucket, the GCRA theoretical arrival time. A row whose time has
-- passed allows what no row does; delete_finished prunes them. No index on tat: every
-- admitted event updates it, and those updates stay HOT.
create table flow_rate_limits (
    bucket text primary key,
    tat timestamptz not null
) with (fillfactor = 80);

-- Singletons: the unfinished runs of a bucket, read from the runs themselves (their flow,
-- migration 0011). Partial, so runs without a singleton, and finished ones, cost nothing.
create index runs_singleton on runs ((flow -> 'singleton' ->> 'bucket'))
    where flow -> 'singleton' ->> 'bucket' is not null
      and status not in ('completed', 'failed', 'cancelled');
