"""``PostgresStore``: the production ``Store``, on psycopg 3 (async) and psycopg-pool."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from slayq.errors import (
    ConfigError,
    InputError,
    LeaseLostError,
    RunNotFoundError,
    StoreError,
    StoreUnavailableError,
)
from slayq.model import CANCELLED, Claim, Lease, OutgoingEvent, RunId, RunInfo, Schedule, Transition
from slayq.runtime.run_filters import check_actor, check_filter, check_limit, decode_cursor
from slayq.store._flow_claims import held_back_of
from slayq.store._one_by_one import commit_one_by_one
from slayq.store._queue_checks import checked_limit, checked_queue
from slayq.store._run_stats import checked_window
from slayq.store.postgres import (
    _batch,
    _commit,
    _ops_queues,
    _ops_runs,
    _ops_stats,
    _schedules,
    _tick,
)
from slayq.store.postgres._admit import admit, decided_at_send, prune_flow_sends
from slayq.store.postgres._codec import dump, valid_id
from slayq.store.postgres._connect import (
    LOCAL_SETTINGS,
    NO_DATABASE,
    POOLED_SESSION_SETTINGS,
    SESSION_SETTINGS,
    parse_url,
)
from slayq.store.postgres._errors import is_conflict, translated
from slayq.store.postgres._ingest import Ingest, lock_event_names
from slayq.store.postgres._migrations import apply_migrations, check_schema
from slayq.store.postgres._retention import Retention
from slayq.store.postgres._transaction import pipelined_transaction
from slayq.store.postgres.sql.finishing import FINISH_IDS, LOCK_PARENTS, RESOLVE_PARENTS
from slayq.store.postgres.sql.leases import EXTEND, RELEASE
from slayq.store.postgres.sql.reading import (
    DUE_BY_QUEUE,
    FLOW_STATE,
    GET_RUN,
    NEXT_WAKEUP,
    RUN_FOR_UPDATE,
)
from slayq.store.protocol import Batch, ClaimRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
    from datetime import datetime, timedelta
    from types import TracebackType

    from slayq.model import (
        AuditEntry,
        ErrorInfo,
        NewRun,
        QueueInfo,
        RunFilter,
        RunPage,
        RunStats,
        ScheduleInfo,
        WaitInfo,
        WorkerInfo,
    )
    from slayq.runtime.clock import Clock
    from slayq.store.protocol import QueueLimit

T = TypeVar("T")
logger = logging.getLogger("slayq.store")
_ATTEMPTS = 5  # a transaction chosen as a deadlock victim runs again, this many times in all
_held = msgspec.json.Decoder(dict[str, int])
_run_info = msgspec.json.Decoder(RunInfo)


def _loads(data: str | bytes) -> Any:
    return msgspec.json.decode(data)


class PostgresStore:
    """Runs, steps, waits and schedules in PostgreSQL, in their own schema.

    ``clock`` is for tests: given one, every statement uses its time instead of the
    database's ``now()``. Without one, the database clock decides what is due, so
    application servers with drifting clocks agree.

        async with PostgresStore("postgresql://app@db/app") as store:
            await store.send_events([...])

    ``open()`` creates the connection pool and applies pending migrations.

    Behind a pooler in transaction mode (PgBouncer, Supabase's pooler), add
    ``?pooler=transaction`` to the URL (see ``_connect``) and give ``listen_url``, a URL
    that reaches PostgreSQL directly (or through a session-mode pooler) for LISTEN;
    without one, workers and servers find new work by polling.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        schema: str = "slayq",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        listen_url: str | None = None,
    ) -> None:
        self.url = url
        self._target = parse_url(url)
        self._listen_target = parse_url(listen_url) if listen_url is not None else None
        if self._listen_target is not None and self._listen_target.transaction_pooler:
            raise InputError(
                "listen_url has pooler=transaction: LISTEN needs a session, so give a URL "
                "that reaches PostgreSQL directly or through a session-mode pooler"
            )
        self.clock = clock
        self.schema = check_schema(schema)
        # One channel per schema, so two slayq installations in one database do not
        # wake each other; the default schema's channel is "slayq_runs".
        self.channel = f"{schema}_runs"
        self._adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
        set_json_loads(_loads, self._adapters)
        self._pool_options: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "timeout": timeout,
        }
        self._pool: AsyncConnectionPool | None = None
        self._opening = anyio.Lock()
        self._retention = Retention()
        self._gated_queues = _tick.GatedQueues()

    @classmethod
    async def connect(cls, url: str, **options: Any) -> PostgresStore:
        """Create a store and ``open`` it."""
        store = cls(url, **options)
        await store.open()
        return store

    async def open(self) -> None:
        """Apply pending migrations and start the pool. Idempotent; the other methods
        call it when needed, so opening explicitly only moves the cost (and the errors
        of a bad URL) to a time of your choosing."""
        async with self._opening:
            if self._pool is not None:
                return
            if not self.url.strip():
                # libpq would take a blank URL as "every default and PG* variable" and
                # reach whichever server they name. Refused here, not in __init__, so a
                # module can build its client before the environment gives the URL.
                raise ConfigError(NO_DATABASE)
            target = self._target
            pool = AsyncConnectionPool(
                target.url,
                open=False,
                configure=self._configure,
                kwargs={"autocommit": True, "context": self._adapters} | target.connect_options(),
                name=f"slayq-{self.schema}",
                **self._pool_options,
            )
            with translated("open the store"):
                async with await psycopg.AsyncConnection.connect(
                    target.url, autocommit=True, **target.connect_options()
                ) as conn:
                    await apply_migrations(conn, self.schema)
                await pool.open()
            self._pool = pool

    async def aclose(self) -> None:
        """Close the pool; a later call opens a new one."""
        async with self._opening:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # JIT compiles a plan in tens of milliseconds: a loss for statements that run in
        # one. Timestamps come back in UTC, as the model wants them. Behind a transaction
        # pooler, the rest is set in each transaction instead (``_run``).
        if self._target.transaction_pooler:
            await conn.execute(POOLED_SESSION_SETTINGS)
        else:
            await conn.execute(SESSION_SETTINGS, [self.schema])

    def _now(self) -> datetime | None:
        return self.clock.now() if self.clock is not None else None

    async def _run(
        self, action: str, body: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
    ) -> T:
        """Run ``body`` on a pooled connection, again if it lost a deadlock."""
        if self._pool is None:
            await self.open()
        pool = self._pool
        if pool is None:
            raise StoreError(f"{action}: the store was closed while opening")
        with translated(action):
            attempt = 1
            while True:
                try:
                    async with pool.connection() as conn:
                        if not self._target.transaction_pooler:
                            return await body(conn)
                        # The whole body in one transaction, the only unit a transaction
                        # pooler keeps on one server connection; its own transactions
                        # become savepoints.
                        async with conn.transaction():
                            await conn.execute(LOCAL_SETTINGS, [self.schema])
                            return await body(conn)
                except psycopg.Error as exc:
                    if not is_conflict(exc) or attempt >= _ATTEMPTS:
                        raise
                    attempt += 1

    # -- events ------------------------------------------------------------------------

    async def send_events(self, events: Sequence[OutgoingEvent]) -> list[RunId | None]:
        if not events:
            return []

        async def body(conn: psycopg.AsyncConnection[Any]) -> list[RunId | None]:
            if decided_at_send(events):
                return await self._send_admitted(conn, events)
            ingest = Ingest(events, now=self._now(), channel=self.channel)
            # Most events cancel and wake nothing: one statement then, no transaction.
            if ingest.may_be_quiet():
                if await ingest.try_quiet(conn):
                    return await ingest.run_ids(conn)
                ingest = Ingest(events, now=self._now(), channel=self.channel)
            async with pipelined_transaction(conn) as pipeline:
                await lock_event_names(conn, shared=ingest.logged_names)
                await ingest.start(conn)
                await pipeline.sync()
                await ingest.apply(conn, pipeline)
            return await ingest.run_ids(conn)

        return await self._run("send events", body)

    async def _send_admitted(
        self, conn: psycopg.AsyncConnection[Any], events: Sequence[OutgoingEvent]
    ) -> list[RunId | None]:
        """A batch with send-time flow control: the features decide what each run becomes
        (``_admit``), then the batch is ingested, all in one transaction."""
        async with pipelined_transaction(conn) as pipeline:
            now = self._now()
            admission = await admit(conn, pipeline, events, now=now, channel=self.channel)
            ingest = Ingest(admission.events, now=now, channel=self.channel)
            await lock_event_names(conn, shared=ingest.logged_names)
            await ingest.start(conn)
            await pipeline.sync()
            await ingest.apply(conn, pipeline)
            await admission.finish(conn)
        return admission.answer(await ingest.run_ids(conn))

    # -- claiming and committing -------------------------------------------------------

    async def claim(
        self,
        *,
        queues: Sequence[QueueLimit] | None,
        limit: int,
        lease_for: timedelta,
        owner: str,
    ) -> list[Claim]:
        if limit <= 0 or (queues is not None and not any(g.names for g in queues)):
            return []

        request = ClaimRequest(
            list(queues) if queues is not None else None, limit, lease_for, owner
        )

        async def body(conn: psycopg.AsyncConnection[Any]) -> list[Claim]:
            ticked = await _tick.tick(
                conn,
                None,
                [request],
                now=self._now(),
                channel=self.channel,
                gated_queues=self._gated_queues,
            )
            return ticked.claimed[0]

        return await self._run("claim runs", body)

    async def commit(self, lease: Lease, transition: Transition) -> None:
        await self._commit_alone(lease, transition)

    async def _commit_alone(self, lease: Lease, transition: Transition) -> None:
        if not valid_id(lease.run_id):
            raise LeaseLostError(f"run {lease.run_id!r}: no such run holds lease {lease.token}")

        async def body(conn: psycopg.AsyncConnection[Any]) -> None:
            now = self._now()
            await _commit.commit(conn, lease, transition, now=now, channel=self.channel)

        await self._run(f"commit run {lease.run_id}", body)

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        """The batchable commits and the claims in one transaction (see ``_batch``), then
        each other commit in its own. If the database refuses a value of the batch, each
        of its commits is made alone, so only the one at fault fails (a single error for
        the whole batch would fail runs that did nothing wrong)."""
        errors: list[StoreError | None] = [None] * len(commits)
        valid: list[int] = []
        for i, (lease, _transition) in enumerate(commits):
            if valid_id(lease.run_id):
                valid.append(i)
            else:
                errors[i] = _batch.lost_lease(lease)
        ours = [commits[i] for i in valid]

        async def body(conn: psycopg.AsyncConnection[Any]) -> _batch.BatchCommitted:
            now = self._now()
            return await _batch.commit_batch(
                conn, ours, claims, now=now, channel=self.channel, gated_queues=self._gated_queues
            )

        try:
            done = await self._run(f"commit {len(ours)} runs", body)
        except StoreUnavailableError as exc:
            return Batch(errors=[exc] * len(commits), claims=[[] for _ in claims], claim_error=exc)
        except StoreError:  # a value refused, a step name taken: find whose, alone
            return await commit_one_by_one(self._commit_alone, self.claim, commits, claims)
        claimed = done.claimed
        for i, error in zip(valid, done.errors, strict=True):
            errors[i] = error
        for j in done.full_path:
            lease, transition = ours[j]
            try:
                await self._commit_alone(lease, transition)
            except StoreError as exc:
                errors[valid[j]] = exc
        return Batch(errors=errors, claims=claimed)

    async def extend_leases(self, leases: Sequence[Lease], lease_for: timedelta) -> list[Lease]:
        valid = [lease for lease in leases if valid_id(lease.run_id)]
        if not valid:
            return []

        async def body(conn: psycopg.AsyncConnection[Any]) -> list[Lease]:
            params = {
                "now": self._now(),
                "lease_for": lease_for,
                "ids": [lease.run_id for lease in valid],
                "tokens": [lease.token for lease in valid],
            }
            cursor = await conn.execute(EXTEND, params)
            extended = {(run_id, token): at for run_id, token, at in await cursor.fetchall()}
            return [
                msgspec.structs.replace(lease, expires_at=extended[(lease.run_id, lease.token)])
                for lease in valid
                if (lease.run_id, lease.token) in extended
            ]

        return await self._run("extend leases", body)

    async def release(
        self, lease: Lease, *, delay: timedelta | None = None, error: ErrorInfo | None = None
    ) -> None:
        if not valid_id(lease.run_id):
            return

        async def body(conn: psycopg.AsyncConnection[Any]) -> None:
            params = {"id": lease.run_id, "token": lease.token, "now": self._now()}
            params |= {"delay": delay, "error": None if error is None else dump(error)}
            await conn.execute(RELEASE, params | {"channel": self.channel})

        await self._run(f"release run {lease.run_id}", body)

    # -- reading and managing ----------------------------------------------------------

    async def get_run(self, run_id: RunId) -> RunInfo:
        async def body(conn: psycopg.AsyncConnection[Any]) -> RunInfo | None:
            cursor = await conn.execute(GET_RUN, {"id": run_id})
            row = await cursor.fetchone()
            if row is None:
                return None
            info = _run_info.decode(str(row[0]))
            if info.flow is not None and info.status in ("queued", "sleeping", "waiting"):
                state = await conn.execute(FLOW_STATE, {"id": run_id, "now": self._now()})
                found = await state.fetchone()
                if found is not None:
                    held_json, tat, now = found
                    line = held_back_of(info, _held.decode(held_json), tat, now)
                    info = msgspec.structs.replace(info, held_back=line)
            return info

        info = await self._run(f"get run {run_id}", body) if valid_id(run_id) else None
        if info is None:
            raise RunNotFoundError(f"no run has id {run_id!r}")
        return info

    # -- operations: runs --

    async def list_runs(self, filter: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        check_filter(filter)
        check_limit(limit)
        if cursor is not None:
            decode_cursor(cursor)  # a bad one is refused before any connection is taken

        async def body(conn: psycopg.AsyncConnection[Any]) -> RunPage:
            now = self._now()
            return await _ops_runs.list_runs(conn, filter, limit=limit, cursor=cursor, now=now)

        return await self._run("list runs", body)

    async def retry_run(self, run_id: RunId, *, actor: str) -> RunId:
        check_actor(actor)
        if not valid_id(run_id):
            raise RunNotFoundError(f"no run has id {run_id!r}")

        async def body(conn: psycopg.AsyncConnection[Any]) -> None:
            now, channel = self._now(), self.channel
            await _ops_runs.retry_run(conn, run_id, actor=actor, now=now, channel=channel)

        await self._run(f"retry run {run_id}", body)
        return run_id

    async def fork_run(
        self, run: NewRun, *, source: RunId, before_step: str | None, actor: str
    ) -> RunId:
        check_actor(actor)
        if not valid_id(source):
            raise RunNotFoundError(f"no run has id {source!r}")
        run = msgspec.structs.replace(run, key=None, parent=None)

        async def body(conn: psycopg.AsyncConnection[Any]) -> RunId:
            return await _ops_runs.fork_run(
                conn,
                run,
                source=source,
                before_step=before_step,
                actor=actor,
                now=self._now(),
                channel=self.channel,
            )

        return await self._run(f"rerun run {source}", body)

    async def cancel_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        return await self._bulk("cancel_runs", filter, dry_run=dry_run, actor=actor)

    async def retry_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        return await self._bulk("retry_runs", filter, dry_run=dry_run, actor=actor)

    async def _bulk(self, action: str, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        check_actor(actor)
        bulk = _ops_runs.Bulk(
            filter, action=action, actor=actor, now=self._now(), channel=self.channel
        )
        if dry_run:

            async def counted(conn: psycopg.AsyncConnection[Any]) -> int:
                return await _ops_runs.count(conn, filter, bulk.eligible, self._now())

            return await self._run(action, counted)
        while await self._run(action, bulk.batch):
            pass
        return bulk.done

    async def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        check_limit(limit)

        async def body(conn: psycopg.AsyncConnection[Any]) -> list[AuditEntry]:
            return await _ops_runs.list_audit(conn, limit)

        return await self._run("list the audit log", body)

    async def run_stats(self, *, window: timedelta) -> RunStats:
        checked_window(window)

        async def body(conn: psycopg.AsyncConnection[Any]) -> RunStats:
            return await _ops_stats.run_stats(conn, window=window, now=self._now())

        return await self._run("read run stats", body)

    async def cancel_run(self, run_id: RunId, *, actor: str = "api") -> bool:
        check_actor(actor)
        if not valid_id(run_id):
            raise RunNotFoundError(f"no run has id {run_id!r}")

        async def body(conn: psycopg.AsyncConnection[Any]) -> tuple[bool, bool]:
            now = self._now()
            base = {"now": now, "channel": self.channel, "ids": [run_id], "id": run_id}
            async with conn.transaction():
                async with conn.pipeline():
                    exists = await conn.execute(RUN_FOR_UPDATE, base)
                    finish = {"status": "cancelled", "result": None, "error": None}
                    finished = await conn.execute(FINISH_IDS, base | finish)
                    await conn.execute(LOCK_PARENTS, base)
                    parents = {"seq": None, "cancelled": dump(CANCELLED)}
                    await conn.execute(RESOLVE_PARENTS, base | parents)
                found = await exists.fetchone() is not None
                cancelled = await finished.fetchone() is not None
                if cancelled:  # audited in the same transaction
                    await _ops_runs.audit(
                        conn, actor=actor, action="cancel", target=run_id, detail={}, now=now
                    )
            return found, cancelled

        found, cancelled = await self._run(f"cancel run {run_id}", body)
        if not found:
            raise RunNotFoundError(f"no run has id {run_id!r}")
        return cancelled

    async def set_schedules(
        self, schedules: Sequence[Schedule], *, app: str, events: Collection[str]
    ) -> None:
        async def body(conn: psycopg.AsyncConnection[Any]) -> None:
            now = self._now()
            await _schedules.set_schedules(conn, schedules, app=app, events=events, now=now)

        await self._run("set schedules", body)

    # -- operations: queues --

    async def list_waits(self, *, event: str | None = None, limit: int = 100) -> list[WaitInfo]:
        checked_limit("list_waits", limit)

        async def body(conn: psycopg.AsyncConnection[Any]) -> list[WaitInfo]:
            return await _ops_queues.list_waits(conn, event=event, limit=limit)

        return await self._run("list waits", body)

    async def pause_queue(self, name: str, *, actor: str) -> bool:
        checked_queue("pause_queue", name, actor)

        async def body(conn: psycopg.AsyncConnection[Any]) -> bool:
            return await _ops_queues.pause_queue(conn, name, actor=actor, now=self._now())

        return await self._run(f"pause queue {name!r}", body)

    async def resume_queue(self, name: str, *, actor: str) -> bool:
        checked_queue("resume_queue", name, actor)

        async def body(conn: psycopg.AsyncConnection[Any]) -> bool:
            now, channel = self._now(), self.channel
            return await _ops_queues.resume_queue(conn, name, actor=actor, now=now, channel=channel)

        return await self._run(f"resume queue {name!r}", body)

    async def list_queues(self) -> list[QueueInfo]:
        async def body(conn: psycopg.AsyncConnection[Any]) -> list[QueueInfo]:
            return await _ops_queues.list_queues(conn, now=self._now())

        return await self._run("list queues", body)

    async def list_schedules(self) -> list[ScheduleInfo]:
        return await self._run("list schedules", _ops_queues.list_schedules)

    async def list_workers(self) -> list[WorkerInfo]:
        return await self._run("list workers", _ops_queues.list_workers)

    async def fire_schedules(self) -> list[RunId]:
        async def body(conn: psycopg.AsyncConnection[Any]) -> list[RunId]:
            return await _schedules.fire_schedules(conn, now=self._now(), channel=self.channel)

        return await self._run("fire schedules", body)

    async def next_wakeup(self) -> datetime | None:
        async def body(conn: psycopg.AsyncConnection[Any]) -> datetime | None:
            cursor = await conn.execute(NEXT_WAKEUP, {"now": self._now()})
            row = await cursor.fetchone()
            return None if row is None else row[0]

        return await self._run("find the next wakeup", body)

    async def due_by_queue(self) -> dict[str, int]:
        async def body(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            cursor = await conn.execute(DUE_BY_QUEUE, {"now": self._now()})
            return {queue: count for queue, count in await cursor.fetchall()}

        return await self._run("count due runs", body)

    async def delete_finished(self, older_than: timedelta, *, batch: int = 1000) -> int:
        async def body(conn: psycopg.AsyncConnection[Any]) -> int:
            deleted = await self._retention.delete_runs(conn, older_than, batch, self._now())
            if deleted < batch:  # caught up with the runs: prune the event log, whole
                await self._retention.prune_events(conn, older_than, self._now())
                await prune_flow_sends(conn, self._now())
                await self._retention.prune_throttles(conn, self._now())
            return deleted

        return await self._run("delete finished runs", body)

    async def listen(self) -> AsyncIterator[str]:
        """Yield the queue of every notification that runs became due, as it arrives.

        Uses a connection of its own (not the pool's): waiting for notifications holds
        the connection. Close the iterator (``contextlib.aclosing``) to close it.

        Behind a transaction pooler, the connection goes to ``listen_url``. Without one it
        never yields: LISTEN there would register a server session the pooler hands to
        other clients, and notifications would go nowhere. Callers poll anyway.
        """
        target = self._listen_target
        if target is None and not self._target.transaction_pooler:
            target = self._target
        if target is None:
            logger.warning(
                "the database URL has pooler=transaction and no listen_url was given: not "
                "listening for new work (LISTEN needs a session), finding it by polling; "
                "give a direct URL as listen_url (SLAY_Q_LISTEN_URL for the server) to be "
                "woken at once"
            )
            await anyio.sleep_forever()
            return
        with translated("listen for due runs"):
            conn = await psycopg.AsyncConnection.connect(target.url, autocommit=True)
            try:
                await conn.execute(sql.SQL("listen {}").format(sql.Identifier(self.channel)))
                async for notify in conn.notifies():
                    yield notify.payload
            finally:
                await conn.close()
