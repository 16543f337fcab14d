"""The Harness with a paused queue: time moves on, the queue's runs wait for the resume."""

from __future__ import annotations

import pytest

import slayq
from slayq.testing import Harness

pytestmark = pytest.mark.anyio


@slayq.function(event="mail/send", queue="mail")
async def send_mail(ctx: slayq.Context[slayq.EmptyEvent]) -> slayq.Workflow:
    yield slayq.finish("sent")


async def test_advancing_past_a_paused_queue_returns_and_its_runs_wait() -> None:
    async with Harness([send_mail]) as h:
        await h.pause_queue("mail")
        run_id = await h.send_event("mail/send")
        assert run_id is not None
        await h.advance("1 day")
        assert (await h.run_until_finished(run_id, limit="1 day")).status == "queued"
        await h.resume_queue("mail")
        await h.run_until_idle()
        assert (await h.get_run(run_id)).status == "completed"
