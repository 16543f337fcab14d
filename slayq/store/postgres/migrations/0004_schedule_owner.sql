-- Schedules are owned by the app that registered them (Client(app=...)): an app's start
-- replaces its own schedules, never another app's. Schedules registered before owners
-- existed have none: the next start of the app that runs their function takes them.
alter table schedules add column app text;

-- Only runs of functions that declare waits_on read the event log, so only they keep
-- events from being pruned. Runs from before this column existed may wait (a constant
-- default needs no rewrite of the table); new runs say what they are.
alter table runs add column may_wait boolean not null default true;

-- The oldest event cursor a waiting-capable run still needs: one index probe.
create index runs_wait_cursor on runs (event_cursor)
    where may_wait and status in ('queued', 'running', 'sleeping', 'waiting');

-- Autovacuum for a queue table. Every claim and commit moves a run between statuses, and
-- each move leaves a dead entry in runs_due where claims scan. By default autovacuum
-- waits for 20 percent of the rows to be dead, and from PostgreSQL 14 a VACUUM that
-- finds dead rows on fewer than 2 percent of the table's pages skips its indexes
-- altogether: the dead entries of the busy queues pile up until then, and every claim
-- reads past them. So: vacuum after 1 percent (inserts too, which keeps the visibility
-- map fresh for index-only scans), and always clean the indexes. Change them with ALTER
-- TABLE slayq.runs SET / RESET; no later migration touches them.
do $$
begin
    alter table runs set (autovacuum_vacuum_scale_factor = 0.01,
                          autovacuum_vacuum_threshold = 1000);
    if current_setting('server_version_num')::int >= 130000 then
        alter table runs set (autovacuum_vacuum_insert_scale_factor = 0.01,
                              autovacuum_vacuum_insert_threshold = 1000,
                              vacuum_index_cleanup = on);
    end if;
end
$$;
