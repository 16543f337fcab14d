"""The dispatcher's ticker is the one way to the store for claims and commits: when a
claim is refused for good, the worker stops with that error, and the runs whose commits
were waiting on the ticker stop too instead of waiting for ever."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import anyio
import pytest

import slayq
from slayq import step
from slayq.client import Client
from slayq.errors import StoreError
from slayq.model import Lease, Transition
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Batch, ClaimRequest
from slayq.worker import Worker

pytestmark = pytest.mark.anyio


class RefusesClaimsLater(MemoryStore):
    """Claims the first time; then any claim is refused, as a database refuses a
    statement for good (a schema missing behind a pooler, a prepared statement lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        if claims:
            self.claims += 1
            if self.claims > 1:
                batch = await super().commit_batch(commits, claims=[])
                refused = StoreError("claim runs: relation 'runs' does not exist")
                return Batch(errors=batch.errors, claims=[[] for _ in claims], claim_error=refused)
        return await super().commit_batch(commits, claims=claims)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def test_a_claim_refused_for_good_stops_the_worker_and_its_runs_with_it() -> None:
    @slayq.function(event="t/two")
    async def two(ctx: slayq.Context[Any]) -> slayq.Workflow:
        yield step.run("a", lambda: 1)
        yield step.run("b", lambda: 2)

    store = RefusesClaimsLater()
    client = Client([two], store=store)
    for _ in range(3):
        await client.send_event("t/two")
    worker = Worker(client, concurrency=5, poll_interval=timedelta(milliseconds=50))
    with anyio.fail_after(10), pytest.raises(BaseException) as caught:  # noqa: PT011
        await worker.run()
    refusals = [e for e in leaves(caught.value) if isinstance(e, StoreError)]
    assert refusals and "does not exist" in str(refusals[0])
