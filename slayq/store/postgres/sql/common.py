"""Pieces every statement uses: ``compact``, the store's clock (``NOW``), the status
sets, the lease fence (``HELD``), plan settings, advisory locks, notifications."""

from __future__ import annotations


def compact(text: str) -> str:
    """The statement on one line, comments dropped (no ``--`` may appear in a literal):
    psycopg caches the parsing of statements up to 4 kB, and server logs read better.
    A line break after ``(`` or before ``)`` goes without a space (literals never span
    lines, so none is changed)."""
    lines = (" ".join(line.split("--", 1)[0].split()) for line in text.splitlines())
    joined = ""
    for line in filter(None, lines):
        glue = "" if not joined or joined.endswith("(") or line.startswith(")") else " "
        joined += glue + line
    return joined


NOW = "clock_now(%(now)s)"  # migration 0010: a virtual time if given, else now()
FINISHED = "('completed', 'failed', 'cancelled')"
TIMED = "('queued', 'sleeping', 'waiting')"  # statuses whose run_at says when they are due


# A run's lease fence, next to a lookup of the run by id. Its status test is made in
# another collation (for equality, every collation agrees) so that it does not imply
# the predicate of runs_leased, the partial index of running runs: if it did, PostgreSQL
# could find the run by scanning that index, which statistics taken while few runs ran
# make look cheaper than one probe of the primary key, and read every running run and
# every entry of a run finished since the last vacuum (test_commit_reads_by_key).
HELD = """status collate "C" = 'running' and lease_token = %(token)s"""


CLOCK = f"select {NOW}"


# A statement planned once for any parameters (a generic plan), not afresh on each run
# (see ``_flow_claim.claim_gated``); local to the transaction.
GENERIC_PLANS = "select set_config('plan_cache_mode', %(mode)s, true)"

# Every read of a claim and of a batch commit is an index lookup, and their plans must
# stay so as tables grow: a plan is kept once made (psycopg prepares a statement on its
# fifth run), and one made while a table was small (a new database) scans it whole,
# until autovacuum analyzes it. So a tick is planned without sequential scans: the tick
# function has these settings as its own (``sql.ticking``), and the gated claim's
# transaction (``_claim.claim_gated_runs``) begins with them, to its end.
# Nor bitmap scans: the takeover of expired leases reads runs_leased by lease expiry,
# where each run finished since the last vacuum left an entry whose time passes with
# its lease's. A bitmap scan cannot mark those entries dead and read them all on every
# claim; an index scan marks them once (test_commit_reads_by_key).
INDEXED_PLANS = compact("""
select set_config('plan_cache_mode', 'force_generic_plan', true),
       set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true)
""")


def backlog(queue: str) -> str:
    """Whether runs of ``queue`` are due and waiting: a run that leaves the running state
    then frees a slot someone may be waiting for, so its queue is notified. A hint
    (polling stays the safety net), so it reads one index entry: the queue's first in
    claim order, plain runs before gated ones (flow control). Runs due behind a lower
    priority's future ones, or gated ones behind plain ones, go unannounced."""
    return f"""exists (
        select 1 from (
            select run_at from runs where queue = {queue} and status in {TIMED}
            order by queue, priority, gated, run_at limit 1
        ) as b
        where b.run_at <= {NOW}
    )"""


# Advisory lock namespaces (the first key of the two-key form).
EVENT_LOCKS = 0x736C_0001
QUEUE_LOCKS = 0x736C_0002
SCHEDULE_LOCKS = 0x736C_0003
FLOW_LOCKS = 0x736C_0005  # send-time flow control buckets (see _admit)
# (0x736C_0004 is the migrations' lock, _migrations._LOCK_NAMESPACE)

# Locks sorted by key so that two transactions never wait on each other in a cycle.
# An event name is locked shared by senders of logged events and exclusively by a run
# registering a wait on it: a sender then sees the wait, or the wait sees the event.
LOCK_NAMES = compact("""
select count(case when t.exclusive then pg_advisory_xact_lock(%(ns)s, hashtext(t.name))
                  else pg_advisory_xact_lock_shared(%(ns)s, hashtext(t.name)) end)
from (
    select * from unnest(%(names)s::text[], %(exclusive)s::bool[]) as u(name, exclusive)
    order by hashtext(u.name), u.name
) as t
""")


NOTIFY = "select count(pg_notify(%(channel)s, q)) from unnest(%(queues)s::text[]) as q"
