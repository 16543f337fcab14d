"""The server's HTTP side (Starlette): a health check, Prometheus metrics and the signed
ingest RPC."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec
import prometheus_client
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from slayq.errors import InputError, RunNotFoundError, StoreUnavailableError
from slayq.transport import ingest
from slayq.transport.errors import BodyTooLargeError, SignatureError
from slayq.transport.receiver import DEFAULT_READ_DEADLINE
from slayq.transport.signing import ReplayGuard, verify
from slayq.transport.wire import DEFAULT_LIMITS, Limits, check_size
from slayq.worker.dispatcher import unserved_queues

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection, Sequence

    from starlette.requests import Request
    from starlette.types import ASGIApp

    from slayq.store.protocol import Store

T = TypeVar("T")


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


def _failure(status: int, reason: str, *, close: bool = False) -> Response:
    response = _json(ingest.Failure(error=reason), status)
    if close:  # the client may still be sending a body we will not read
        response.headers["connection"] = "close"
    return response


def create_app(
    store: Store,
    secrets: Sequence[str],
    *,
    served: Collection[str] = (),
    limits: Limits = DEFAULT_LIMITS,
    read_deadline: float = DEFAULT_READ_DEADLINE,
    dashboard: ASGIApp | None = None,
) -> Starlette:
    """The server's Starlette app. A request body over ``limits`` is refused (413) on its
    declared length before it is read; one not received within ``read_deadline`` seconds
    is cut off (408). ``dashboard``, if given, is served at ``/ui/``."""
    replays = ReplayGuard()

    async def read(request: Request, type_: type[T]) -> T | Response:
        declared = request.headers.get("content-length", "").strip()
        try:
            if declared.isdigit():
                check_size(int(declared), limits, what="request")
            buffer = bytearray()
            with anyio.fail_after(read_deadline):
                async for chunk in request.stream():
                    buffer += chunk
                    check_size(len(buffer), limits, what="request", at_least=True)
        except BodyTooLargeError as exc:
            return _failure(413, str(exc))
        except TimeoutError:
            return _failure(
                408, f"the body was not received within {read_deadline:g} s", close=True
            )
        body = bytes(buffer)
        now = time.time()
        try:
            verify(request.headers, body, secrets, now=now)
        except SignatureError as exc:
            return _failure(401, exc.reason)
        if not replays.first_sight(request.headers, now):
            return _failure(401, "this request was already received; replays are refused")
        try:
            return ingest.decode_request(body, type_)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _failure(400, f"not a valid {type_.__name__} request: {exc}")
        except RecursionError:
            return _failure(400, f"not a valid {type_.__name__} request: JSON nested too deeply")

    def rpc(
        type_: type[T], handle: Callable[[T], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            parsed = await read(request, type_)
            if isinstance(parsed, Response):
                return parsed
            try:
                return _json(await handle(parsed))
            except RunNotFoundError as exc:
                return _failure(404, str(exc))
            except InputError as exc:
                # A value refused (by the checks or the database) is refused again if
                # sent again: a 4xx, so that callers do not retry it.
                return _failure(400, str(exc))
            except StoreUnavailableError as exc:
                return _failure(503, str(exc))

        return endpoint

    async def send_events(request: ingest.SendEvents) -> ingest.SentEvents:
        return ingest.SentEvents(run_ids=await store.send_events(request.events))

    async def get_run(request: ingest.RunRef) -> Any:
        return await store.get_run(request.run_id)

    # -- operations: runs --

    async def list_runs(request: ingest.ListRuns) -> Any:
        return await store.list_runs(request.filter, limit=request.limit, cursor=request.cursor)

    async def retry_run(request: ingest.RunAction) -> ingest.RunRef:
        return ingest.RunRef(run_id=await store.retry_run(request.run_id, actor=request.actor))

    async def fork_run(request: ingest.ForkRun) -> ingest.RunRef:
        run_id = await store.fork_run(
            request.run,
            source=request.source,
            before_step=request.before_step,
            actor=request.actor,
        )
        return ingest.RunRef(run_id=run_id)

    async def cancel_runs(request: ingest.BulkAction) -> ingest.Counted:
        n = await store.cancel_runs(request.filter, dry_run=request.dry_run, actor=request.actor)
        return ingest.Counted(count=n)

    async def retry_runs(request: ingest.BulkAction) -> ingest.Counted:
        n = await store.retry_runs(request.filter, dry_run=request.dry_run, actor=request.actor)
        return ingest.Counted(count=n)

    async def list_audit(request: ingest.ListAudit) -> Any:
        return await store.list_audit(limit=request.limit)

    async def run_stats(request: ingest.RunStatsRequest) -> Any:
        return await store.run_stats(window=request.window)

    async def cancel_run(request: ingest.RunAction) -> ingest.Cancelled:
        cancelled = await store.cancel_run(request.run_id, actor=request.actor)
        return ingest.Cancelled(cancelled=cancelled)

    async def set_schedules(request: ingest.SetSchedules) -> dict[str, bool]:
        await store.set_schedules(request.schedules, app=request.app, events=request.events)
        return {"ok": True}

    # -- operations: queues --

    async def list_waits(request: ingest.ListWaits) -> ingest.Waits:
        return ingest.Waits(waits=await store.list_waits(event=request.event, limit=request.limit))

    async def pause_queue(request: ingest.QueueAction) -> ingest.Changed:
        return ingest.Changed(changed=await store.pause_queue(request.name, actor=request.actor))

    async def resume_queue(request: ingest.QueueAction) -> ingest.Changed:
        return ingest.Changed(changed=await store.resume_queue(request.name, actor=request.actor))

    async def list_queues(request: ingest.Nothing) -> ingest.Queues:
        return ingest.Queues(queues=await store.list_queues())

    async def list_schedules(request: ingest.Nothing) -> ingest.Schedules:
        return ingest.Schedules(schedules=await store.list_schedules())

    async def list_workers(request: ingest.Nothing) -> ingest.Workers:
        return ingest.Workers(workers=await store.list_workers())

    queue_routes = [
        Route(f"/ingest/{ingest.LIST_WAITS}", rpc(ingest.ListWaits, list_waits), methods=["POST"]),
        Route(
            f"/ingest/{ingest.PAUSE_QUEUE}", rpc(ingest.QueueAction, pause_queue), methods=["POST"]
        ),
        Route(
            f"/ingest/{ingest.RESUME_QUEUE}",
            rpc(ingest.QueueAction, resume_queue),
            methods=["POST"],
        ),
        Route(f"/ingest/{ingest.LIST_QUEUES}", rpc(ingest.Nothing, list_queues), methods=["POST"]),
        Route(
            f"/ingest/{ingest.LIST_SCHEDULES}",
            rpc(ingest.Nothing, list_schedules),
            methods=["POST"],
        ),
        Route(
            f"/ingest/{ingest.LIST_WORKERS}", rpc(ingest.Nothing, list_workers), methods=["POST"]
        ),
    ]

    async def health(request: Request) -> Response:
        try:
            unserved = await unserved_queues(store, served)
        except StoreUnavailableError as exc:
            return _json({"status": "unavailable", "error": str(exc)}, 503)
        return _json({"status": "ok", "unserved_queues": unserved})

    async def metrics(request: Request) -> Response:
        exposition = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        return Response(exposition, media_type=prometheus_client.CONTENT_TYPE_LATEST)

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(
            f"/ingest/{ingest.SEND_EVENTS}", rpc(ingest.SendEvents, send_events), methods=["POST"]
        ),
        Route(f"/ingest/{ingest.GET_RUN}", rpc(ingest.RunRef, get_run), methods=["POST"]),
        Route(f"/ingest/{ingest.CANCEL_RUN}", rpc(ingest.RunAction, cancel_run), methods=["POST"]),
        # -- operations: runs --
        *(
            Route(f"/ingest/{name}", rpc(type_, handle), methods=["POST"])  # type: ignore[arg-type]
            for name, type_, handle in (
                (ingest.LIST_RUNS, ingest.ListRuns, list_runs),
                (ingest.RETRY_RUN, ingest.RunAction, retry_run),
                (ingest.FORK_RUN, ingest.ForkRun, fork_run),
                (ingest.CANCEL_RUNS, ingest.BulkAction, cancel_runs),
                (ingest.RETRY_RUNS, ingest.BulkAction, retry_runs),
                (ingest.LIST_AUDIT, ingest.ListAudit, list_audit),
                (ingest.RUN_STATS, ingest.RunStatsRequest, run_stats),
            )
        ),
        Route(
            f"/ingest/{ingest.SET_SCHEDULES}",
            rpc(ingest.SetSchedules, set_schedules),
            methods=["POST"],
        ),
        *queue_routes,
    ]
    if dashboard is not None:
        routes.append(Mount("/ui", dashboard))
    return Starlette(routes=routes)
