-- Times slayq reads back into Python must fit Python's datetime, which ends with the year
-- 9999; PostgreSQL's timestamptz goes on to 294276. A run due after 9999 (a sleep of
-- "300000 years" answered by an app) would be stored, then break every claim and wake-up
-- query that reads it. These checks refuse it in the commit that writes it, which fails
-- that run's attempt with the error instead (SQLSTATE 23514 is an input error).
-- NOT VALID: rows written before cannot hold such times (reading them failed), and
-- skipping the scan keeps the migration instant on a large table.
alter table runs add constraint runs_run_at_readable
    check (run_at < '10000-01-01 00:00:00+00') not valid;

alter table pending add constraint pending_expires_at_readable
    check (expires_at < '10000-01-01 00:00:00+00') not valid;

alter table schedules add constraint schedules_next_at_readable
    check (next_at < '10000-01-01 00:00:00+00') not valid;
