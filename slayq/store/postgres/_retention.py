"""Deleting old finished runs and pruning the event log, from where the last call stopped.

A purge leaves dead index entries behind until VACUUM removes them: a scan from the
start of ``runs_finished`` (or of the events' primary key) would read them again on every
call, thousands of pages after a large purge. Each store remembers where it got to, and
the next call starts there. The marks are hints kept per process: a run they skip (one
another transaction held locked when it was passed, or one whose finishing transaction
committed late) is found when the marks are forgotten, every ``_FORGET_AFTER``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slayq.store.postgres._flow_claim import PRUNE_THROTTLES
from slayq.store.postgres.sql.retention import DELETE_FINISHED, PRUNE_EVENTS
from slayq.store.protocol import EVENT_LOG_GRACE

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import AsyncConnection

# A run's finished_at is its finishing transaction's start: one that commits late lands
# behind runs already deleted by at most the length of a transaction.
_SLACK = timedelta(minutes=1)
_FORGET_AFTER = 3600.0  # seconds
_EVENT_BATCH = 5000


class Retention:
    def __init__(self) -> None:
        self._finished_since: datetime | None = None  # no finished run is older, but...
        self._events_through = 0  # the event log holds no prunable seq up to this one
        self._marked_at = time.monotonic()

    def _forget_if_stale(self) -> None:
        if time.monotonic() - self._marked_at > _FORGET_AFTER:
            self._finished_since, self._events_through = None, 0
            self._marked_at = time.monotonic()

    async def delete_runs(
        self, conn: AsyncConnection[Any], older_than: timedelta, batch: int, now: datetime | None
    ) -> int:
        """Delete one batch of old finished runs; returns how many."""
        self._forget_if_stale()
        params = {"now": now, "older_than": older_than, "batch": batch}
        cursor = await conn.execute(DELETE_FINISHED, params | {"since": self._finished_since})
        row = await cursor.fetchone()
        if row is None:
            return 0
        deleted, last, cutoff = int(row[0]), row[1], row[2]
        # A batch that was not whole left none before the cutoff.
        mark = (last if deleted == batch else cutoff) - _SLACK
        if self._finished_since is None or mark > self._finished_since:
            self._finished_since = mark
        return deleted

    async def prune_events(
        self, conn: AsyncConnection[Any], older_than: timedelta, now: datetime | None
    ) -> int:
        """Prune the event log in batches until no batch is whole; returns how many went."""
        self._forget_if_stale()
        params = {"now": now, "older_than": older_than, "grace": EVENT_LOG_GRACE}
        pruned = 0
        while True:
            cursor = await conn.execute(
                PRUNE_EVENTS,
                params | {"after": self._events_through, "batch": _EVENT_BATCH},
            )
            row = await cursor.fetchone()
            if row is None:
                return pruned
            prunable, deleted, through = int(row[0]), int(row[1]), row[2]
            pruned += deleted
            if through is not None:
                self._events_through = max(self._events_through, int(through))
            if prunable < _EVENT_BATCH:
                return pruned

    async def prune_throttles(self, conn: AsyncConnection[Any], now: datetime | None) -> int:
        """Drop the throttles' state that no longer holds anything back, in batches."""
        pruned = 0
        while True:
            cursor = await conn.execute(PRUNE_THROTTLES, {"now": now, "batch": _EVENT_BATCH})
            pruned += cursor.rowcount
            if cursor.rowcount < _EVENT_BATCH:
                return pruned
