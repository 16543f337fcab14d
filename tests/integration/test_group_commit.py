"""The worker's group commit on a real PostgreSQL: commits of concurrent runs share a
transaction, and still no step handler starts before the commit of the step before it
returned (a step is durable before anything depends on it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import slayq
from slayq import step
from slayq.model import Lease, Transition
from slayq.store.postgres import PostgresStore
from slayq.store.protocol import Batch, ClaimRequest
from tests.integration.workers import finished, running

pytestmark = pytest.mark.anyio

RUNS, STEPS = 12, 5


class RecordingStore(PostgresStore):
    """Logs each commit once ``commit_batch`` returned it, and each batch's size."""

    def __init__(self, url: str, log: list[tuple[str, str, str]]) -> None:
        super().__init__(url)
        self.log = log
        self.sizes: list[int] = []

    async def commit_batch(
        self, commits: Sequence[tuple[Lease, Transition]], *, claims: Sequence[ClaimRequest]
    ) -> Batch:
        result = await super().commit_batch(commits, claims=claims)
        self.sizes.append(len(commits))
        for (lease, transition), error in zip(commits, result.errors, strict=True):
            if error is None:
                for record in transition.steps:
                    self.log.append(("committed", lease.run_id, record.name))
        return result


async def test_no_step_handler_starts_before_its_predecessors_commit_returned(
    pg_url: str,
) -> None:
    log: list[tuple[str, str, str]] = []

    @slayq.function(event="test/steps")
    async def steps(ctx: slayq.Context[dict[str, Any]]) -> slayq.Workflow:
        for n in range(STEPS):

            async def handler(n: int = n) -> int:
                log.append(("start", ctx.run_id, f"s{n}"))
                await anyio.sleep(0.001 * (n % 3))  # runs interleave, batches form
                return n

            yield step.run(f"s{n}", handler)
        yield slayq.finish("ok")

    store = RecordingStore(pg_url, log)
    async with running(store, [steps], concurrency=RUNS) as client:
        ids = [await client.send_event("test/steps", {"i": i}) for i in range(RUNS)]
        for run_id in ids:
            assert (await finished(client, run_id, seconds=60)).status == "completed"

    assert max(store.sizes) > 1, f"no batch held more than one commit: {store.sizes}"
    position = {entry: i for i, entry in enumerate(log)}
    for run_id in ids:
        assert run_id is not None
        for n in range(1, STEPS):
            committed = position[("committed", run_id, f"s{n - 1}")]
            started = position[("start", run_id, f"s{n}")]
            assert committed < started, f"run {run_id}: s{n} started before s{n - 1} committed"
