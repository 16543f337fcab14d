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

-- list_runs pages newest first by (created_at, id). One index per common filter, each
-- ending in that order, so that a page is one index range scan however many runs there
-- are. Claims and commits change a run's status, which runs_due's predicate reads, so
-- those updates were never HOT: each writes an entry in every index of runs, these too.
-- A queue filter reads runs_listed and skips the other queues' runs (queues are few).
create index runs_listed on runs (created_at, id);
create index runs_status_listed on runs (status, created_at, id);
create index runs_event_listed on runs (event, created_at, id);
create index runs_children on runs (parent_run_id, created_at, id)
    where parent_run_id is not null;
-- data containment (data::jsonb @> '{"customer": {"id": 7}}'): data is json, kept as
-- written; the index is on its jsonb cast, which the filter repeats. Claims and commits
-- write it too (see above), each parsing the run's data: the costliest index of runs;
-- bench/bench_list_runs.py measures it.
create index runs_data on runs using gin ((data::jsonb) jsonb_path_ops);

-- Operator actions, who did them and when, written in each action's own transaction.
create table audit_log (
    id bigint generated always as identity primary key,
    at timestamptz not null,
    actor text not null,
    action text not null,
    -- a run id, or the filter of a bulk action (JSON)
    target text not null,
    detail json not null default '{}'
);
