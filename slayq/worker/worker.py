"""The in-process worker: a dispatcher whose executor drives the engine in this process.

The generator stays alive between a run's steps (commit, then the result goes in); the
memo is replayed only when a run resumes after a suspension or a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slayq.runtime.driver import drive
from slayq.runtime.retry import DEFAULT_RETRY_POLICY, RetryPolicy
from slayq.worker.dispatcher import Dispatcher

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.model import Claim
    from slayq.runtime.driver import Commit


class Worker(Dispatcher):
    """Runs ``client``'s functions in this process. Options: see ``Dispatcher``."""

    def __init__(
        self, client: Client, *, retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY, **options: Any
    ) -> None:
        self.client = client
        super().__init__(
            client.store,
            self._drive,
            register_schedules=client.register_schedules,
            retry_policy=retry_policy,
            **options,
        )

    async def _drive(self, claim: Claim, commit: Commit) -> None:
        await drive(self.client.registry, claim, commit, retry_policy=self.retry_policy)
