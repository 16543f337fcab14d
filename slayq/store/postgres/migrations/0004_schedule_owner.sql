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
