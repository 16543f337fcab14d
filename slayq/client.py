"""``Client``: the application's handle on slayq: send events, read and cancel runs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from slayq.errors import ConfigError, EventDataError, InputError, UnknownEventError
from slayq.runtime.durations import parse_duration
from slayq.runtime.limits import DEFAULT_LIMITS, SizeLimits
from slayq.runtime.registry import Registry
from slayq.runtime.run_filters import check_limit, run_filter
from slayq.runtime.sending import outgoing_event
from slayq.telemetry import tracing
from slayq.transport.live import DEFAULT_IDLE, DEFAULT_MAX_RUNS, check_bounds
from slayq.transport.receiver import DEFAULT_READ_DEADLINE, Receiver, asgi_app
from slayq.transport.signing import secrets_from_env
from slayq.transport.wire import DEFAULT_LIMITS as DEFAULT_BODY_LIMITS
from slayq.transport.wire import Limits

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from slayq.model import (
        AuditEntry,
        NewRun,
        QueueInfo,
        RunId,
        RunInfo,
        RunPage,
        RunStats,
        RunStatus,
        ScheduleInfo,
        WaitInfo,
        WorkerInfo,
    )
    from slayq.runtime.durations import Duration
    from slayq.runtime.functions import Function
    from slayq.store.protocol import Store
    from slayq.transport.receiver import ASGIApp, ASGIReceive, ASGISend, Scope


logger = logging.getLogger(__name__)

# Who operator actions are recorded as done by, when the caller does not say.
DEFAULT_ACTOR = "api"


class Client:
    """Knows the app's functions and a store. Event data is validated here, before
    anything is stored, so a bad event raises to its sender.

    With ``endpoint`` (the URL where this app mounts ``client.asgi``), runs it sends are
    delivered there by ``python -m slayq.server``; ``secret`` (or ``SLAY_Q_SECRET`` /
    ``SLAY_Q_WORKER_SECRET``) verifies those deliveries. ``body_limits`` bounds what one
    delivery or answer may carry (keep it equal to the server's ``SLAY_Q_BODY_LIMIT``),
    ``read_deadline`` how many seconds a delivery's body may take to arrive. Between the
    deliveries of one attempt the receiver keeps up to ``live_runs`` runs live (0: none),
    each for at most ``live_idle`` idle seconds, so that the server sends a run's memo
    once per attempt instead of with every step.

    ``app`` names the app for the cron schedules it registers: an app's start replaces
    its own schedules and no other app's. Default: ``endpoint`` if given, else the name
    of the module that created the client; name it explicitly if that may change.
    """

    def __init__(
        self,
        functions: Iterable[Function],
        *,
        store: Store,
        endpoint: str | None = None,
        app: str | None = None,
        secret: str | Sequence[str] | None = None,
        limits: SizeLimits = DEFAULT_LIMITS,
        body_limits: Limits = DEFAULT_BODY_LIMITS,
        read_deadline: float = DEFAULT_READ_DEADLINE,
        live_runs: int = DEFAULT_MAX_RUNS,
        live_idle: float = DEFAULT_IDLE,
    ) -> None:
        self.registry = Registry(functions, limits=limits, endpoint=endpoint)
        self.store = store
        self.endpoint = endpoint
        self.app = app if app is not None else endpoint or _calling_module()
        self._secret = secret
        self._body_limits = body_limits
        self._read_deadline = read_deadline
        check_bounds(live_runs, live_idle)
        self._live_runs = live_runs
        self._live_idle = live_idle
        self._receiver: Receiver | None = None
        self._reported = False  # a configuration error was logged

    @property
    def receiver(self) -> Receiver:
        """Runs deliveries from the server; made on first use, so senders need no secret."""
        if self._receiver is None:
            secrets = (
                secrets_from_env()
                if self._secret is None
                else [self._secret]
                if isinstance(self._secret, str)
                else list(self._secret)
            )
            self._receiver = Receiver(
                self.registry,
                secrets,
                limits=self._body_limits,
                read_deadline=self._read_deadline,
                live_runs=self._live_runs,
                live_idle=self._live_idle,
            )
        return self._receiver

    def check_receiver(self) -> None:
        """Raise ``ConfigError`` now if deliveries cannot be received (no secret is set).

        Call it where your app starts (its lifespan), so that a missing ``SLAY_Q_SECRET``
        stops the app at once instead of failing every delivery.
        """
        _ = self.receiver

    async def receive(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """Answer one delivery (any framework): pass the request's headers and exact body
        bytes; answer with the returned HTTP status and JSON body.

        Without a secret, every delivery is answered 500 with the ``ConfigError``'s one
        line (logged once).
        """
        try:
            receiver = self.receiver
        except ConfigError as exc:
            return 500, self._misconfigured(exc)
        return await receiver.receive(headers, body)

    def _misconfigured(self, exc: ConfigError) -> bytes:
        if not self._reported:
            self._reported = True
            logger.error("slayq cannot receive deliveries: %s", exc)
        return msgspec.json.encode({"error": str(exc)})

    @property
    def asgi(self) -> ASGIApp:
        """An ASGI app that receives deliveries: mount it at ``endpoint``'s path.

        The secret is read at the ASGI lifespan's start-up, which fails without one, or
        on the first request where no lifespan runs (a route of a framework's app); so
        mounting it at import time is safe.
        """

        return _LazyAsgi(self)

    @property
    def functions(self) -> list[Function]:
        return list(self.registry.functions.values())

    async def send_event(
        self,
        event: str,
        data: object = None,
        *,
        delay: Duration | None = None,
        run_at: datetime | str | None = None,
        key: str | None = None,
    ) -> RunId | None:
        """Send an event; returns the id of the run it starts (None if it starts none).

        With ``key``, sending the same event with the same key again returns the first
        run's id and starts nothing new.
        """
        outgoing = outgoing_event(self.registry, event, data, delay=delay, run_at=run_at, key=key)
        (run_id,) = await self.store.send_events([outgoing])
        return run_id

    async def send_events(self, events: Sequence[tuple[str, Any]]) -> list[RunId | None]:
        """Send ``(event, data)`` pairs in one round trip; all are validated first."""
        # Whether spans are recorded, asked once for the batch: with OpenTelemetry's API
        # installed and no SDK, each ask reads the environment (~4 µs, a third of what a
        # batched event cost the client).
        traced = tracing.enabled()
        resolved = [
            outgoing_event(self.registry, name, data, traced=traced) for name, data in events
        ]
        return await self.store.send_events(resolved)

    async def get_run(self, run_id: RunId) -> RunInfo:
        return await self.store.get_run(run_id)

    # -- operations: runs --

    async def list_runs(
        self,
        *,
        status: RunStatus | Iterable[RunStatus] | None = None,
        event: str | None = None,
        queue: str | None = None,
        since: datetime | Duration | None = None,
        until: datetime | Duration | None = None,
        data: Mapping[str, Any] | None = None,
        parent: RunId | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Find runs, newest first by run id (a UUIDv7: the sender's clock): a page of at
        most ``limit`` (1 to 1000) and the cursor of the next page (None on the last).

        ``status`` is a status or several; ``since``/``until`` bound the creation time,
        each a datetime or a duration meaning that long ago ("1h": the last hour, by the
        store's clock); ``data`` is a mapping the run's event data must contain (JSON
        containment, nested mappings allowed); ``parent`` lists the runs a run invoked.
        Listed runs carry no steps, pending steps or history: ``get_run`` reads those.
        """
        found = run_filter(
            status=status,
            event=event,
            queue=queue,
            since=since,
            until=until,
            data=data,
            parent=parent,
        )
        check_limit(limit)
        return await self.store.list_runs(found, limit=limit, cursor=cursor)

    async def retry(self, run_id: RunId, *, actor: str | None = None) -> RunId:
        """Run a failed or cancelled run again from where it stopped; returns its id.

        The same run: its finished steps are kept (they do not run again), its attempt
        budget is renewed, and it is due at once. ``InputError`` for a run in another
        status. Retrying an invoked run does not reopen its caller, which already got
        the failure: rerun the caller from its invoke step instead.
        """
        return await self.store.retry_run(run_id, actor=actor or DEFAULT_ACTOR)

    async def rerun(
        self,
        run_id: RunId,
        *,
        from_step: str | None = None,
        data: object = None,
        actor: str | None = None,
    ) -> RunId:
        """Start a NEW run of the same function; returns its id.

        It gets the original run's memo up to, not including, ``from_step`` (those steps
        do not run again; None: from the start) and the original event data, or ``data``
        (validated against the function's schema). The new run records ``forked_from``.
        """
        if from_step is not None and (not isinstance(from_step, str) or not from_step):
            raise InputError(f"from_step must be a step name or None, got {from_step!r}")
        source = await self.store.get_run(run_id)
        fn = self.registry.functions.get(source.event)
        if fn is None:
            raise UnknownEventError(
                f"run {run_id} is of event {source.event!r}, which no function of this "
                "client runs: rerun it from the app that has the function"
            )
        given = source.data if data is None else data
        if fn.flow.is_batch:
            new = self._batch_rerun(fn, given)
        else:
            payload = self.registry.payload(fn, given)
            new = self.registry.new_run(fn, payload, key=None, delay=None, run_at=None)
        return await self.store.fork_run(
            new, source=run_id, before_step=from_step, actor=actor or DEFAULT_ACTOR
        )

    def _batch_rerun(self, fn: Function, given: object) -> NewRun:
        """A batch function's run stands for its events: ``{"events": [...]}``, each
        checked against the schema; the copy is a batch of its own (never joined)."""
        events = given.get("events") if isinstance(given, Mapping) else None
        if not isinstance(events, list) or not events:
            raise EventDataError(
                f"event {fn.event!r} is batched: a rerun's data must be "
                f'{{"events": [...]}} with at least one event, got {given!r:.200}'
            )
        payloads = [self.registry.payload(fn, event) for event in events]
        new = self.registry.new_run(fn, payloads[0], key=None, delay=None, run_at=None)
        return msgspec.structs.replace(new, data={"events": payloads})

    async def cancel(self, run_id: RunId, *, actor: str | None = None) -> bool:
        """Cancel a run (kept, marked ``cancelled``); False if it had already finished."""
        return await self.store.cancel_run(run_id, actor=actor or DEFAULT_ACTOR)

    async def cancel_run(self, run_id: RunId, *, actor: str | None = None) -> bool:
        """The same as ``cancel``."""
        return await self.cancel(run_id, actor=actor)

    async def cancel_runs(
        self, *, dry_run: bool = False, actor: str | None = None, **filters: Any
    ) -> int:
        """Cancel every unfinished run that the ``list_runs`` filters select; returns how
        many (with ``dry_run``, only counts them). Runs created after the call started
        are left alone; it goes in batches, so a huge selection holds no long lock."""
        found = run_filter(**filters)
        return await self.store.cancel_runs(found, dry_run=dry_run, actor=actor or DEFAULT_ACTOR)

    async def retry_runs(
        self, *, dry_run: bool = False, actor: str | None = None, **filters: Any
    ) -> int:
        """Retry (as ``retry``) every failed or cancelled run that the ``list_runs``
        filters select; returns how many (with ``dry_run``, only counts them)."""
        found = run_filter(**filters)
        return await self.store.retry_runs(found, dry_run=dry_run, actor=actor or DEFAULT_ACTOR)

    async def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """The latest operator actions (retry, rerun, cancel, bulk actions), newest first."""
        return await self.store.list_audit(limit=check_limit(limit))

    async def run_stats(self, *, window: Duration = "1h") -> RunStats:
        """Runs started and finished (completed, failed, cancelled) per minute over the
        last ``window`` (1 minute to 1 day), and how many running runs hold an expired
        lease: what the dashboard's overview draws."""
        return await self.store.run_stats(window=parse_duration(window, what="window"))

    # -- operations: queues --

    async def list_waits(self, *, event: str | None = None, limit: int = 100) -> list[WaitInfo]:
        """Pending ``wait_for_event`` steps across runs (of ``event`` only, if given):
        run, step, event, match field and value, deadline; soonest deadline first."""
        return await self.store.list_waits(event=event, limit=limit)

    async def pause_queue(self, name: str, *, actor: str | None = None) -> bool:
        """Stop every worker and server from claiming runs of queue ``name`` (runs already
        running go on); False if it was paused already. Logged in the audit log under
        ``actor`` (default ``"api"``)."""
        return await self.store.pause_queue(name, actor=actor or "api")

    async def resume_queue(self, name: str, *, actor: str | None = None) -> bool:
        """Let queue ``name`` be claimed again; idle workers are told at once. False if it
        was not paused. Logged in the audit log under ``actor`` (default ``"api"``)."""
        return await self.store.resume_queue(name, actor=actor or "api")

    async def list_queues(self) -> list[QueueInfo]:
        """Each queue with runs or paused: due, running, sleeping and waiting counts, when
        its oldest due run became due, and whether it is paused."""
        return await self.store.list_queues()

    async def list_schedules(self) -> list[ScheduleInfo]:
        """The registered cron schedules: event, cron, owning app, next tick."""
        return await self.store.list_schedules()

    async def list_workers(self) -> list[WorkerInfo]:
        """The processes holding leases: runs held and last heartbeat."""
        return await self.store.list_workers()

    async def open(self) -> None:
        """Connect the store (on Postgres: create the pool, run migrations).

        An app served by the slayq server also registers its cron schedules here, since
        the server knows no functions.
        """
        await self.store.open()
        if self.endpoint is not None:
            await self.register_schedules()

    async def register_schedules(self) -> None:
        """Register the cron schedules of this app's functions under ``app``.

        A schedule removed from the code stops, one whose expression changed moves to
        its new next tick, and other apps' schedules are left alone. Workers call this
        at start, and ``open()`` does for a client with an ``endpoint``.
        """
        await self.store.set_schedules(
            self.registry.schedules(), app=self.app, events=list(self.registry.functions)
        )

    async def aclose(self) -> None:
        await self.store.aclose()

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _LazyAsgi:
    """An ASGI app object (not a function, so routers treat it as a whole app)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        if self._app is None:
            try:
                self._app = asgi_app(self._client.receiver)
            except ConfigError as exc:
                await self._refuse(exc, scope, receive, send)
                return
        await self._app(scope, receive, send)

    async def _refuse(
        self, exc: ConfigError, scope: Scope, receive: ASGIReceive, send: ASGISend
    ) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        if scope["type"] != "http":
            return
        body = self._client._misconfigured(exc)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _calling_module() -> str:
    """The module that created the client (past this one), for the default app name.

    A script run directly is ``__main__`` to itself: its file name is used instead.
    """
    frame = sys._getframe(2)
    name = str(frame.f_globals.get("__name__", "__main__"))
    if name == "__main__":
        spec = frame.f_globals.get("__spec__")
        path = frame.f_globals.get("__file__")
        if spec is not None and getattr(spec, "name", None):
            return str(spec.name)
        if path:
            return Path(str(path)).stem
    return name
