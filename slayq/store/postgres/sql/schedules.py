"""Cron schedules: registering them and firing their due ticks."""

from __future__ import annotations

from slayq.store.postgres.sql.common import NOW, compact

SCHEDULES = "select event, cron, next_at from schedules order by event for update"

# An app's registration drops the schedules it does not keep of the events it runs
# (whoever registered them) and its own of events it no longer runs; no other app's.
DROP_SCHEDULES = compact("""
delete from schedules
where not (event = any(%(kept)s::text[]))
  and (event = any(%(runs)s::text[]) or app = %(app)s)
""")

UPSERT_SCHEDULES = compact("""
insert into schedules (event, cron, template, next_at, app)
select t.*, %(app)s
from unnest(%(events)s::text[], %(crons)s::text[], %(templates)s::json[],
            %(next_ats)s::timestamptz[]) as t
on conflict (event) do update
    set cron = excluded.cron, template = excluded.template, next_at = excluded.next_at,
        app = excluded.app
""")

DUE_SCHEDULES = compact(f"""
select event, cron, template::text, next_at, {NOW}
from schedules
where next_at <= {NOW}
order by event
""")

# Compare-and-set: of several processes firing the same tick, one moves next_at.
ADVANCE_SCHEDULES = compact("""
update schedules as s set next_at = t.next_at
from unnest(%(events)s::text[], %(ticks)s::timestamptz[], %(next_ats)s::timestamptz[])
     as t(event, tick, next_at)
where s.event = t.event and s.next_at = t.tick
returning s.event
""")
