"""Runs the app keeps live between the deliveries of one attempt.

After the app answers ``Continue``, the run's ``Execution`` (its generator, paused at the
next step) is kept here under the run id and the lease token, so the server's next
delivery can be a short ``ContinueDelivery`` instead of the whole memo, and the app goes
on without replaying it. A kept run is taken out while a delivery drives it, so two
deliveries never drive it at once.

The bounds keep a server that went away (or a lease that changed) from holding memory:
at most ``max_runs`` runs, the least recently used closed first, and none idle for more
than ``idle`` seconds (checked at each delivery). A closed run's generator is closed
(``aclose``, so its ``finally`` blocks run); it is also closed when a new claim of the
same run arrives (a new lease). A miss is never an error: the server sends the whole
claim again.

A generator belongs to the event loop it started on. A run kept on one loop is never
resumed on another: one ``asyncio.run`` per request (a sync view) closes the loop and
its generators after each delivery, so on seeing that, the cache stops keeping runs and
logs why once. Access is guarded by a lock, as threaded servers call in from several
threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio.lowlevel

from slayq.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from slayq.model import Claim
    from slayq.runtime.replay import Execution

logger = logging.getLogger(__name__)

DEFAULT_MAX_RUNS = 1000
DEFAULT_IDLE = 60.0


def check_bounds(max_runs: int, idle: float) -> None:
    """Raise ``ConfigError`` unless ``max_runs`` is 0 or more and ``idle`` positive."""
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 0:
        raise ConfigError(f"live_runs must be a whole number, 0 or more, got {max_runs!r}")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or not idle > 0:
        raise ConfigError(f"live_idle must be a positive number of seconds, got {idle!r}")


@dataclass
class LiveRun:
    """A run paused after a committed ``Continue``: the next delivery resumes it."""

    claim: Claim
    execution: Execution
    memo_size: int  # the steps the run has once the server committed the last answer
    loop: anyio.lowlevel.EventLoopToken = field(default_factory=anyio.lowlevel.current_token)
    last_used: float = 0.0


class LiveRuns:
    """A bounded cache of ``LiveRun`` by run id; see the module doc."""

    def __init__(
        self,
        *,
        max_runs: int = DEFAULT_MAX_RUNS,
        idle: float = DEFAULT_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_bounds(max_runs, idle)
        self.max_runs = max_runs
        self.idle = idle
        self._clock = clock
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()  # least recently kept first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def enabled(self) -> bool:
        return self.max_runs > 0

    async def take(self, run_id: str, token: int, memo_size: int) -> LiveRun | None:
        """The run kept for this lease at this point, taken out; None on a miss."""
        loop = anyio.lowlevel.current_token()
        with self._lock:
            closing = self._expired()
            live = self._runs.get(run_id)
            if live is not None and live.loop != loop:
                del self._runs[run_id]
                live = None
                self._stop_keeping()
            elif live is not None and (live.execution.finished or live.memo_size != memo_size):
                live = None  # not this point of the run: the server resends the claim
            elif live is not None and live.claim.lease.token != token:
                live = None  # another lease: a full claim will replace it
            elif live is not None:
                del self._runs[run_id]
        await _close(closing)
        return live

    async def keep(self, live: LiveRun) -> bool:
        """Keep ``live`` for the next delivery; False (and it is closed) when disabled."""
        if not self.enabled:
            await live.execution.aclose()
            return False
        live.last_used = self._clock()
        with self._lock:
            replaced = self._runs.pop(live.claim.lease.run_id, None)
            self._runs[live.claim.lease.run_id] = live
            closing = self._expired()
            while len(self._runs) > self.max_runs:
                closing.append(self._runs.popitem(last=False)[1])
        await _close([replaced] if replaced is not None else [])
        await _close(closing)
        return True

    async def discard(self, run_id: str) -> None:
        """Close the run kept for ``run_id``, if any (a new claim of it arrived)."""
        with self._lock:
            live = self._runs.pop(run_id, None)
        await _close([live] if live is not None else [])

    async def aclose(self) -> None:
        """Close every kept run (the app is stopping)."""
        with self._lock:
            closing = list(self._runs.values())
            self._runs.clear()
        await _close(closing)

    def _expired(self) -> list[LiveRun]:
        """Take out the runs idle for longer than ``idle`` (under the lock)."""
        horizon = self._clock() - self.idle
        expired = []
        while self._runs:
            run_id, oldest = next(iter(self._runs.items()))
            if oldest.last_used > horizon:
                break
            expired.append(self._runs.pop(run_id))
        return expired

    def _stop_keeping(self) -> None:
        """Deliveries arrive on different event loops: a kept generator cannot be resumed."""
        if not self.enabled:
            return
        self.max_runs = 0
        logger.warning(
            "slayq: deliveries run on a new event loop each (asyncio.run per request?), so "
            "the receiver cannot keep runs live between deliveries; every delivery will carry "
            "the run's whole memo. Serve the receiver from an async app (client.asgi) to keep "
            "them."
        )


async def _close(runs: list[LiveRun]) -> None:
    """Close the generators of ``runs`` that belong to this event loop.

    One of another loop cannot be resumed here; its loop closes it (asyncio.run does, as
    it ends) or the garbage collector does.
    """
    if not runs:  # the usual case: finding the loop costs a few us per delivery
        return
    loop = anyio.lowlevel.current_token()
    for live in runs:
        if live.loop == loop:
            await live.execution.aclose()
