"""``HttpStore``: a store reached through the server's signed ingest RPC.

For apps without database credentials (serverless functions, say): they send events,
read, list, cancel, retry and rerun runs, and register cron schedules over HTTP; the
server does the rest.

    client = slayq.Client(functions, store=HttpStore("https://slayq.internal:7700", secret),
                          endpoint="https://app.example/api/slay-q")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import httpx
import msgspec

from slayq.errors import RunNotFoundError, StoreError, StoreInputError, StoreUnavailableError
from slayq.model import AuditEntry, RunInfo, RunPage, RunStats
from slayq.transport import ingest
from slayq.transport.signing import sign

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime, timedelta

    from slayq.model import (
        Claim,
        ErrorInfo,
        Lease,
        NewRun,
        OutgoingEvent,
        QueueInfo,
        RunFilter,
        RunId,
        Schedule,
        ScheduleInfo,
        Transition,
        WaitInfo,
        WorkerInfo,
    )
    from slayq.store.protocol import QueueLimit

T = TypeVar("T")


class HttpStore:
    def __init__(self, url: str, secret: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._secret = secret
        self._http = httpx.AsyncClient(timeout=timeout)

    async def _call(self, method: str, request: Any, answer: type[T]) -> T:
        body = ingest.encode_request(request)
        headers = sign(body, self._secret) | {"content-type": "application/json"}
        try:
            response = await self._http.post(
                f"{self.url}/ingest/{method}", content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailableError(
                f"the slayq server at {self.url} could not be reached: {exc!r}"
            ) from exc
        if response.status_code != 200:
            self._raise(method, response)
        try:
            return msgspec.json.decode(response.content, type=answer)
        except msgspec.DecodeError as exc:
            raise StoreError(f"ingest {method}: the server's answer is not valid: {exc}") from None

    def _raise(self, method: str, response: httpx.Response) -> NoReturn:
        try:
            reason = msgspec.json.decode(response.content, type=ingest.Failure).error
        except msgspec.DecodeError:
            reason = response.text[:200]
        message = f"ingest {method}: the server answered {response.status_code}: {reason}"
        if response.status_code == 404:
            raise RunNotFoundError(message)
        if response.status_code in (400, 413):  # sending it again would fail again
            raise StoreInputError(message)
        if response.status_code in (408, 502, 503, 504):
            raise StoreUnavailableError(message)
        raise StoreError(message)

    async def send_events(self, events: Sequence[OutgoingEvent]) -> list[RunId | None]:
        sent = await self._call(
            ingest.SEND_EVENTS, ingest.SendEvents(events=list(events)), ingest.SentEvents
        )
        return sent.run_ids

    async def get_run(self, run_id: RunId) -> RunInfo:
        return await self._call(ingest.GET_RUN, ingest.RunRef(run_id=run_id), RunInfo)

    # -- operations: runs --

    async def list_runs(self, filter: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        request = ingest.ListRuns(filter=filter, limit=limit, cursor=cursor)
        return await self._call(ingest.LIST_RUNS, request, RunPage)

    async def retry_run(self, run_id: RunId, *, actor: str) -> RunId:
        request = ingest.RunAction(run_id=run_id, actor=actor)
        return (await self._call(ingest.RETRY_RUN, request, ingest.RunRef)).run_id

    async def fork_run(
        self, run: NewRun, *, source: RunId, before_step: str | None, actor: str
    ) -> RunId:
        request = ingest.ForkRun(run=run, source=source, before_step=before_step, actor=actor)
        return (await self._call(ingest.FORK_RUN, request, ingest.RunRef)).run_id

    async def cancel_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        request = ingest.BulkAction(filter=filter, dry_run=dry_run, actor=actor)
        return (await self._call(ingest.CANCEL_RUNS, request, ingest.Counted)).count

    async def retry_runs(self, filter: RunFilter, *, dry_run: bool, actor: str) -> int:
        request = ingest.BulkAction(filter=filter, dry_run=dry_run, actor=actor)
        return (await self._call(ingest.RETRY_RUNS, request, ingest.Counted)).count

    async def list_audit(self, *, limit: int = 100) -> list[AuditEntry]:
        request = ingest.ListAudit(limit=limit)
        return await self._call(ingest.LIST_AUDIT, request, list[AuditEntry])

    async def run_stats(self, *, window: timedelta) -> RunStats:
        request = ingest.RunStatsRequest(window=window)
        return await self._call(ingest.RUN_STATS, request, RunStats)

    async def cancel_run(self, run_id: RunId, *, actor: str = "api") -> bool:
        request = ingest.RunAction(run_id=run_id, actor=actor)
        answer = await self._call(ingest.CANCEL_RUN, request, ingest.Cancelled)
        return answer.cancelled

    async def set_schedules(
        self, schedules: Sequence[Schedule], *, app: str, events: Collection[str]
    ) -> None:
        request = ingest.SetSchedules(schedules=list(schedules), app=app, events=list(events))
        await self._call(ingest.SET_SCHEDULES, request, dict)

    # -- operations: queues --

    async def list_waits(self, *, event: str | None = None, limit: int = 100) -> list[WaitInfo]:
        request = ingest.ListWaits(event=event, limit=limit)
        return (await self._call(ingest.LIST_WAITS, request, ingest.Waits)).waits

    async def pause_queue(self, name: str, *, actor: str) -> bool:
        request = ingest.QueueAction(name=name, actor=actor)
        return (await self._call(ingest.PAUSE_QUEUE, request, ingest.Changed)).changed

    async def resume_queue(self, name: str, *, actor: str) -> bool:
        request = ingest.QueueAction(name=name, actor=actor)
        return (await self._call(ingest.RESUME_QUEUE, request, ingest.Changed)).changed

    async def list_queues(self) -> list[QueueInfo]:
        return (await self._call(ingest.LIST_QUEUES, ingest.Nothing(), ingest.Queues)).queues

    async def list_schedules(self) -> list[ScheduleInfo]:
        answer = await self._call(ingest.LIST_SCHEDULES, ingest.Nothing(), ingest.Schedules)
        return answer.schedules

    async def list_workers(self) -> list[WorkerInfo]:
        return (await self._call(ingest.LIST_WORKERS, ingest.Nothing(), ingest.Workers)).workers

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        await self._http.aclose()

    # Claiming and committing belong to the server, next to the database.

    async def claim(
        self, *, queues: Sequence[QueueLimit] | None, limit: int, lease_for: timedelta, owner: str
    ) -> list[Claim]:
        _server_only("claim")

    async def commit(self, lease: Lease, transition: Transition) -> None:
        _server_only("commit")

    async def extend_leases(self, leases: Sequence[Lease], lease_for: timedelta) -> list[Lease]:
        _server_only("extend_leases")

    async def release(
        self, lease: Lease, *, delay: timedelta | None = None, error: ErrorInfo | None = None
    ) -> None:
        _server_only("release")

    async def fire_schedules(self) -> list[RunId]:
        _server_only("fire_schedules")

    async def next_wakeup(self) -> datetime | None:
        _server_only("next_wakeup")

    async def due_by_queue(self) -> dict[str, int]:
        _server_only("due_by_queue")

    async def delete_finished(self, older_than: timedelta, *, batch: int = 1000) -> int:
        _server_only("delete_finished")


def _server_only(method: str) -> NoReturn:
    raise StoreError(
        f"HttpStore.{method}: only the slayq server claims and runs work; an HttpStore "
        "sends events and reads runs. Run python -m slayq.server next to the database."
    )
