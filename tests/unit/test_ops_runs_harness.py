"""The Harness supports the operations on runs, on its virtual clock."""

from __future__ import annotations

from collections import Counter

import pytest

import slayq
from slayq import step
from slayq.errors import InputError
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


async def test_the_harness_lists_retries_reruns_and_audits_runs() -> None:
    calls: Counter[str] = Counter()
    broken = [True]

    @slayq.function(event="job", retries=1)
    async def job(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
        def fetch() -> str:
            calls["fetch"] += 1
            return "data"

        def store() -> str:
            calls["store"] += 1
            if broken[0]:
                raise RuntimeError("disk full")
            return "stored"

        yield step.run("fetch", fetch)
        yield step.sleep("pause", "1 day")
        yield step.run("store", store)

    async with Harness([job]) as h:
        run_id = await h.send_event("job")
        assert run_id is not None
        failed = await h.run_until_finished(run_id)
        assert (failed.status, calls) == ("failed", {"fetch": 1, "store": 2})
        assert [r.id for r in (await h.list_runs(status="failed", since="2 days")).runs] == [run_id]
        assert (await h.list_runs(status="failed", since="1h")).runs == []

        broken[0] = False
        await h.retry(run_id, actor="me")
        with pytest.raises(InputError, match="is queued"):
            await h.retry(run_id)
        done = await h.run_until_finished(run_id)
        assert (done.status, calls) == ("completed", {"fetch": 1, "store": 3})

        fork = await h.rerun(run_id, from_step="pause")
        await h.run_until_finished(fork)  # sleeps its day again, then stores
        assert calls == {"fetch": 1, "store": 4}
        assert (await h.get_run(fork)).forked_from == run_id

        assert await h.retry_runs(status="completed", dry_run=True) == 0
        assert await h.cancel_runs(event="job") == 0
        assert [e.action for e in await h.list_audit()] == ["cancel_runs", "rerun", "retry"]
