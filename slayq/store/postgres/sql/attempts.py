"""SQL pieces that record attempt history and step timings, used by the statements that
claim, commit, release and cancel runs (see migration 0006).

The conventions of ``sql`` hold here too. The runs row carries the current attempt:
``attempt_started_at`` is set by the claim and cleared by whatever ends the attempt, so
it is set exactly while an attempt runs whose row ``attempts`` does not have yet;
``attempt_replayed`` and ``attempt_executed`` add up what its commits did, and go back to
zero when it ends (the claim, already near psycopg's 4 kB cache limit, leaves them).
Ending an attempt writes one row, as a CTE of the statement that already ends it, with
one exception on the hot path: the one-statement commit that completes a run keeps the
attempt on the run's row instead (start, owner, counts; it ended at ``finished_at``), and
history reads it from there. That saves a row, and its index entry, per completed run:
about 8% of no-op runs per second.
"""

from __future__ import annotations

# What a source of ``ended_attempt`` provides, read from a runs row.
CURRENT = "id, attempt, attempt_started_at, lease_owner, attempt_replayed, attempt_executed"


def ended_attempt(
    source: str,
    outcome: str,
    error: str,
    *,
    now: str,
    where: str = "true",
    replayed: str = "e.attempt_replayed",
    executed: str = "e.attempt_executed",
) -> str:
    """A CTE ``ended`` that records the attempt of each ``source`` row ``e`` (columns as
    ``CURRENT``) passing ``where``, with ``outcome`` and ``error`` (SQL expressions), as
    ended at ``now``. A row without a running attempt (recorded already) records none.
    Short: a statement over 4 kB is parsed again on every execution (see ``compact``)."""
    return f"""ended as (
    insert into attempts
    select e.id, e.attempt, e.attempt_started_at, {now}, e.lease_owner, {outcome}, {error},
           {replayed}, {executed}
    from {source} as e
    where e.attempt_started_at is not null and {where}
)"""


# A step's duration as msgspec reads a timedelta: ISO 8601 seconds ("PT1.5S").
_DURATION = "'PT' || extract(epoch from s.duration)::text || 'S'"

STEP_INFO_JSON = f"""json_build_object('name', s.name, 'kind', s.kind, 'output', s.output,
    'error', s.error, 'finished_at', s.finished_at, 'started_at', s.started_at,
    'duration', {_DURATION}, 'attempt', s.attempt)"""

_ATTEMPT_FIELDS = """'number', {a}.number, 'started_at', {a}.started_at,
    'ended_at', {a}.ended_at, 'owner', {a}.owner, 'outcome', {a}.outcome, 'error', {a}.error,
    'replayed', {a}.replayed, 'executed', {a}.executed"""

# The recorded attempts of run ``r``, oldest first, then the one on its row: running now,
# or the one that completed it (see the module's docstring).
HISTORY_JSON = f"""coalesce((
    select json_agg(h.entry order by h.ord nulls last)
    from (
        select a.id as ord, json_build_object({_ATTEMPT_FIELDS.format(a="a")}) as entry
        from attempts as a where a.run_id = r.id
        union all
        select null, json_build_object(
            'number', r.attempt, 'started_at', r.attempt_started_at, 'ended_at', r.finished_at,
            'owner', r.lease_owner, 'outcome', r.status, 'error', null,
            'replayed', r.attempt_replayed, 'executed', r.attempt_executed)
        where r.status in ('running', 'completed') and r.attempt_started_at is not null
    ) as h), '[]'::json)"""
