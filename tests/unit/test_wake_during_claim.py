"""Work announced while a claim is in flight is claimed at once, not at the next poll.

A claim that comes back short means nothing more was due *in its snapshot*; a run sent
and announced (NOTIFY) while the claim was in flight may be missing from it. The ticker
then waited for the next poll (a second by default) or timer, so that run started up to
a second late, and under a steady trickle of sends some runs always did.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import anyio
import pytest

import slayq
from slayq.client import Client
from slayq.model import Claim, Completed, Lease, Transition
from slayq.runtime.driver import Commit
from slayq.store.memory import MemoryStore
from slayq.store.protocol import Batch, ClaimRequest
from slayq.worker.dispatcher import Dispatcher

pytestmark = pytest.mark.anyio

DONE = Transition(steps=[], outcome=Completed(None))


@slayq.function(event="t/work")
async def work(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
    return None


class Listening(MemoryStore):
    """A claim that finds nothing answers only after new work was announced meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.announce = anyio.Event()
        self.claims = 0
        self.first_claim_in_flight = anyio.Event()
        self.first_claim_may_answer = anyio.Event()

    async def listen(self) -> AsyncIterator[str]:
        await self.announce.wait()
        yield "general"
        await anyio.sleep_forever()

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        batch = await super().commit_batch(commits, claims=claims)
        if claims:
            self.claims += 1
            if self.claims == 1:
                self.first_claim_in_flight.set()
                await self.first_claim_may_answer.wait()
        return batch


async def test_work_announced_while_a_claim_is_in_flight_is_claimed_at_once() -> None:
    """The claim came back short, but its snapshot predates the announcement: waiting
    for the next poll (30 s here) left the new run waiting that long."""
    store = Listening()
    client = Client([work], store=store)
    started = anyio.Event()

    async def execute(claim: Claim, commit: Commit) -> None:
        started.set()
        await commit(claim.lease, DONE)

    dispatcher = Dispatcher(store, execute, retention=None, poll_interval=timedelta(seconds=30))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(dispatcher.run)
            await store.first_claim_in_flight.wait()
            await client.send_event("t/work", {})
            store.announce.set()
            await anyio.sleep(0.05)  # the listener wakes the dispatcher
            store.first_claim_may_answer.set()
            with anyio.fail_after(2):
                await started.wait()
            dispatcher.stop()
