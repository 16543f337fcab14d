"""``Client``: the application's handle on slayq: send events, read and cancel runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.runtime.limits import DEFAULT_LIMITS, SizeLimits
from slayq.runtime.registry import Registry
from slayq.runtime.sending import outgoing_event

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from slayq.model import RunId, RunInfo
    from slayq.runtime.durations import Duration
    from slayq.runtime.functions import Function
    from slayq.store.protocol import Store


class Client:
    """Knows the app's functions and a store. Event data is validated here, before
    anything is stored, so a bad event raises to its sender."""

    def __init__(
        self, functions: Iterable[Function], *, store: Store, limits: SizeLimits = DEFAULT_LIMITS
    ) -> None:
        self.registry = Registry(functions, limits=limits)
        self.store = store

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
        resolved = [outgoing_event(self.registry, name, data) for name, data in events]
        return await self.store.send_events(resolved)

    async def get_run(self, run_id: RunId) -> RunInfo:
        return await self.store.get_run(run_id)

    async def cancel(self, run_id: RunId) -> bool:
        """Cancel a run (kept, marked ``cancelled``); False if it had already finished."""
        return await self.store.cancel_run(run_id)

    async def open(self) -> None:
        """Connect the store (on Postgres: create the pool, run migrations)."""
        await self.store.open()

    async def aclose(self) -> None:
        await self.store.aclose()

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
