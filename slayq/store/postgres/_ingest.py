"""Ingesting a batch of events inside an open, pipelined transaction.

Per event, in order, as ``MemoryStore`` does: cancel the runs its rules match, log it,
answer the waits it matches, start its run. Most events can do nothing but log and
start: when no unfinished run has a cancel rule or a wait on any name of the batch, and
no run of the batch cancels on a later event of it, the whole batch is a few set-based
statements. Otherwise the runs it may touch are locked first; a batch that only wakes,
or only cancels runs that answer no caller, is still set-based (order then matters only
in ways the set-based statements reproduce); any other batch gets statements per event
that may cancel or wake, still pipelined in one round trip.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slayq.model import CANCELLED, NewRun, OutgoingEvent, RunId
from slayq.store.postgres._codec import due_now, dump, run_params, run_rows
from slayq.store.postgres.sql.common import EVENT_LOCKS, LOCK_NAMES, NOTIFY
from slayq.store.postgres.sql.finishing import LOCK_PARENTS, RESOLVE_PARENTS
from slayq.store.postgres.sql.sending import (
    CANCEL_ALL_MATCHING,
    CANCEL_MATCHING,
    INSERT_EVENTS,
    INSERT_QUIET_RUN,
    INSERT_QUIET_RUNS,
    INSERT_RUNS,
    INTERESTING_NAMES,
    KEYED_RUNS,
    LOCK_AFFECTED,
    WAKE_ALL_WAITERS,
    WAKE_WAITERS,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from psycopg import AsyncConnection, AsyncCursor, AsyncPipeline


async def lock_event_names(
    conn: AsyncConnection[Any], *, shared: Sequence[str] = (), exclusive: Sequence[str] = ()
) -> None:
    """Take the event-name locks (see ``sql.common.LOCK_NAMES``); exclusive wins over shared."""
    modes = dict.fromkeys(shared, False) | dict.fromkeys(exclusive, True)
    if modes:
        await conn.execute(
            LOCK_NAMES,
            {"ns": EVENT_LOCKS, "names": list(modes), "exclusive": list(modes.values())},
        )


class Ingest:
    """One batch: ``try_quiet`` when it ``may_be_quiet``; else ``start``, sync the pipeline,
    ``apply`` and finish the transaction; then ``run_ids``."""

    def __init__(
        self, events: Sequence[OutgoingEvent], *, now: datetime | None, channel: str
    ) -> None:
        self.events = list(events)
        self.logged_names = sorted({e.name for e in self.events if e.logged})
        self._now = now
        self._channel = channel
        self._seqs: list[int | None] = [None] * len(self.events)
        self._cursors: list[int | None] = [None] * len(self.events)
        self._inserted: list[AsyncCursor[Any]] = []
        self._found: dict[int, str | None] = {}
        self._events_cursor: AsyncCursor[Any] | None = None
        self._names_cursor: AsyncCursor[Any] | None = None

    def may_be_quiet(self) -> bool:
        """Whether ``try_quiet`` may apply the batch: none of its events is logged and no
        run of it cancels on a later event of it."""
        return not self.logged_names and not self._cancelled_within_batch()

    async def try_quiet(self, conn: AsyncConnection[Any]) -> bool:
        """Apply the batch in one statement (``INSERT_QUIET_RUNS``; ``INSERT_QUIET_RUN``
        for a lone run without a key, cancel rules or caller) if nothing can cancel or
        wake on its names; False if something can (then nothing was applied)."""
        if len(self.events) == 1:
            run = self.events[0].run
            if run is not None and run.key is None and not run.cancel_on and not run.parent:
                one = run_params(run)
                if one is not None:
                    return await self._try_quiet_one(conn, run, one)
        runs = [(i, e.run, None) for i, e in enumerate(self.events) if e.run is not None]
        keyed = any(run.key is not None for _, run, _ in runs)
        ruled = any(run.cancel_on for _, run, _ in runs)
        params = run_rows(runs) | {"now": self._now, "channel": self._channel}
        params["names"] = sorted({e.name for e in self.events})
        params["queues"] = self._due_queues()
        cursor = await conn.execute(INSERT_QUIET_RUNS[keyed, ruled], params)
        rows = await cursor.fetchall()
        if ("-1", "false") in ((str(idx), flag) for idx, flag in rows):
            return False
        if keyed:
            self._found = {idx: run_id for idx, run_id in rows if idx >= 0}
        else:  # no key, no conflict: each run was inserted with the id it was given
            self._found = {i: run.id for i, run, _ in runs}
        return True

    async def _try_quiet_one(
        self, conn: AsyncConnection[Any], run: NewRun, params: dict[str, Any]
    ) -> bool:
        """``try_quiet`` for the batch of one run without a key, cancel rules or caller:
        ``INSERT_QUIET_RUN``, a parameter per column (``run_params``)."""
        due = due_now(run, self._now or datetime.now(UTC))
        params = params | {"now": self._now, "channel": self._channel, "notify": due}
        cursor = await conn.execute(INSERT_QUIET_RUN, params)
        row = await cursor.fetchone()
        if row is None or not row[0]:
            return False
        self._found = {0: run.id}
        return True

    async def start(self, conn: AsyncConnection[Any]) -> None:
        """Log the logged events and ask which names can cancel or wake anything."""
        logged = [e for e in self.events if e.logged]
        if logged:
            rows = dump([{"ord": i, "name": e.name, "data": e.data} for i, e in enumerate(logged)])
            self._events_cursor = await conn.execute(
                INSERT_EVENTS, {"now": self._now, "rows": rows}
            )
        self._names_cursor = await conn.execute(
            INTERESTING_NAMES, {"names": sorted({e.name for e in self.events})}
        )

    async def apply(self, conn: AsyncConnection[Any], pipeline: AsyncPipeline) -> None:
        """Everything else; the results of ``start`` must have arrived (a pipeline sync)."""
        if self._events_cursor is not None:
            seqs = iter(sorted(row[0] for row in await self._events_cursor.fetchall()))
            self._seqs = [next(seqs) if e.logged else None for e in self.events]
            last: int | None = None
            for i, seq in enumerate(self._seqs):
                last = seq if seq is not None else last
                self._cursors[i] = last
        assert self._names_cursor is not None
        cancels: set[str] = set()
        waits: set[str] = set()
        for name, has_rules, has_waits in await self._names_cursor.fetchall():
            if has_rules:
                cancels.add(name)
            if has_waits:
                waits.add(name)
        cancels |= self._cancelled_within_batch()
        if not cancels and not waits:
            await self._insert_runs(conn, range(len(self.events)))
        else:
            await self._one_by_one(conn, pipeline, cancels, waits)
        await self._notify(conn)

    async def run_ids(self, conn: AsyncConnection[Any]) -> list[RunId | None]:
        """Per event, the run it started or found by key; after the transaction ended."""
        found: dict[int, str | None] = dict(self._found)
        for cursor in self._inserted:
            found.update((idx, run_id) for idx, run_id in await cursor.fetchall())
        missing = [
            (e.run.event, e.run.key)
            for i, e in enumerate(self.events)
            if e.run is not None and e.run.key is not None and found.get(i) is None
        ]
        by_key: dict[tuple[str, str], str] = {}
        if missing:
            cursor = await conn.execute(
                KEYED_RUNS,
                {"events": [m[0] for m in missing], "keys": [m[1] for m in missing]},
            )
            by_key = {(event, key): run_id for event, key, run_id in await cursor.fetchall()}
        ids: list[RunId | None] = []
        for i, event in enumerate(self.events):
            run_id = found.get(i)
            if run_id is None and event.run is not None and event.run.key is not None:
                run_id = by_key.get((event.run.event, event.run.key))
            ids.append(RunId(run_id) if run_id is not None else None)
        return ids

    def _cancelled_within_batch(self) -> set[str]:
        """Names of events that follow, in this batch, a run cancelling on them."""
        rule_names: set[str] = set()
        hit: set[str] = set()
        for event in self.events:
            if event.name in rule_names:
                hit.add(event.name)
            if event.run is not None:
                rule_names.update(rule.event for rule in event.run.cancel_on)
        return hit

    async def _insert_runs(self, conn: AsyncConnection[Any], indexes: Sequence[int]) -> None:
        runs: list[tuple[int, NewRun, int | None]] = []
        for i in indexes:
            run = self.events[i].run
            if run is not None:
                runs.append((i, run, self._cursors[i]))
        if not runs:
            return
        seqs = [s for s in self._seqs if s is not None]
        params = run_rows(runs, first_seq=seqs[0] if seqs else None) | {"now": self._now}
        self._inserted.append(await conn.execute(INSERT_RUNS, params))

    async def _one_by_one(
        self,
        conn: AsyncConnection[Any],
        pipeline: AsyncPipeline,
        cancels: set[str],
        waits: set[str],
    ) -> None:
        touchy = [e for e in self.events if e.name in cancels or e.name in waits]
        cursor = await conn.execute(
            LOCK_AFFECTED,
            {"names": [e.name for e in touchy], "datas": [dump(e.data) for e in touchy]},
        )
        await pipeline.sync()
        rows = await cursor.fetchall()
        locked = [run_id for run_id, _ in rows]
        base = {"now": self._now, "channel": self._channel, "cancelled": dump(CANCELLED)}
        if not cancels:
            if locked:
                woken = [
                    {"ord": i, "name": e.name, "data": e.data, "seq": self._seqs[i]}
                    for i, e in enumerate(self.events)
                    if e.name in waits
                ]
                params = base | {"rows": dump(woken), "allowed": locked}
                await conn.execute(WAKE_ALL_WAITERS, params)
            await self._insert_runs(conn, range(len(self.events)))
            return
        # A cancelled run with a parent answers it.
        parented = [run_id for run_id, has_parent in rows if has_parent]
        parented += [e.run.id for e in self.events if e.run and e.run.parent]
        if not waits and not parented:
            await self._insert_runs(conn, range(len(self.events)))
            cancelling = [
                {"ord": i, "name": e.name, "data": e.data}
                for i, e in enumerate(self.events)
                if e.name in cancels
            ]
            born = [{"id": e.run.id, "idx": i} for i, e in enumerate(self.events) if e.run]
            params = base | {"rows": dump(cancelling), "born": dump(born), "allowed": locked}
            finish = {"status": "cancelled", "result": None, "error": None}
            await conn.execute(CANCEL_ALL_MATCHING, params | finish)
            return
        allowed = locked + [e.run.id for e in self.events if e.run is not None]
        start = 0
        for i, event in enumerate(self.events):
            cancel, wake = event.name in cancels, event.name in waits
            if not (cancel or wake):
                continue
            await self._insert_runs(conn, range(start, i))
            start = i
            data = dump(event.data)
            if cancel:
                await conn.execute(
                    CANCEL_MATCHING,
                    base
                    | {"name": event.name, "data": data, "allowed": allowed}
                    | {"status": "cancelled", "result": None, "error": None},
                )
                if parented:
                    await conn.execute(LOCK_PARENTS, {"ids": parented})
                    await conn.execute(RESOLVE_PARENTS, base | {"ids": parented, "seq": None})
            if wake and locked:
                await conn.execute(
                    WAKE_WAITERS,
                    base
                    | {"name": event.name, "data": data, "allowed": locked, "seq": self._seqs[i]},
                )
        await self._insert_runs(conn, range(start, len(self.events)))

    async def _notify(self, conn: AsyncConnection[Any]) -> None:
        queues = self._due_queues()
        if queues:
            await conn.execute(NOTIFY, {"channel": self._channel, "queues": queues})

    def _due_queues(self) -> list[str]:
        """The queues of the batch's runs that are due at once: their listeners are told."""
        now = self._now or datetime.now(UTC)
        return sorted(
            {e.run.queue for e in self.events if e.run is not None and due_now(e.run, now)}
        )
