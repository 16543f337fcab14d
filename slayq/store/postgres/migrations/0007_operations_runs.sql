-- Operations on runs: finding them (list_runs), acting on them (retry, rerun, bulk
-- actions) and the audit log of those actions.

-- A run's cancel rules as it was created with them: finishing a run deletes its rows of
-- cancel_rules, and a retry puts them back from here. Null: the run has none.
alter table runs add column cancel_on json;
-- The run that rerun made this one from (its memo was copied). No foreign key: the
-- source may be deleted by retention before its fork.
alter table runs add column forked_from uuid;

-- Runs that already have cancel rules (unfinished ones) keep them across a retry.
update runs as r set cancel_on = c.rules
from (
    select run_id, json_agg(json_build_object('event', event, 'field', field, 'value', value))
        as rules
    from cancel_rules
    group by run_id
) as c
where r.id = c.run_id;

-- list_runs pages newest first by id alone: run ids are UUIDv7 (milliseconds first), so
-- the default list, its cursor (the last id) and a since/until window (bounded by ids as
-- well as by created_at) read the primary key backwards; other filters are checked on the
-- rows it reads. No index for them: claims and commits change a run's status and run_at,
-- which runs_due reads, so those updates are never HOT and write an entry in every index
-- of runs. A partial index is written only for the rows it holds:
-- failed and cancelled runs, the ones operators look for, one entry each.
create index runs_failed_listed on runs (id) where status in ('failed', 'cancelled');
-- a run's children (invoke): written by every update of a child run, none for the others
create index runs_children on runs (parent_run_id, id) where parent_run_id is not null;
-- data containment (data::jsonb @> '{"customer": {"id": 7}}') reads the runs and parses
-- their data. An index for it is opt-in (docs/operations.md): claims and commits would
-- write it too, parsing each run's data, so it costs every run; when an operator creates
--   create index concurrently runs_data on slayq.runs using gin ((data::jsonb) jsonb_path_ops)
-- list_runs uses it (its filter is that expression).

-- Operator actions, who did them and when, written in each action's own transaction
-- (the migration that adds queue actions, 0008, creates the same table: whichever runs
-- first creates it).
create table if not exists audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null,
    actor text not null,
    action text not null,
    -- a run id, a queue, or the filter of a bulk action (JSON)
    target text,
    detail json
);
