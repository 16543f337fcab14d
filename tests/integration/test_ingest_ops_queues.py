"""The queue operations through the ingest RPC, over a real socket: ``HttpStore`` answers
what the database holds, and a refused call is a 400 that changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from examples.app.functions import FUNCTIONS
from slayq.client import Client
from slayq.errors import StoreInputError
from slayq.http_store import HttpStore
from slayq.model import PendingStep, Suspend, Transition
from slayq.store.postgres import PostgresStore
from tests.integration.servers import SECRET

pytestmark = pytest.mark.anyio


async def test_queue_operations_through_the_server(server: str, pg_url: str) -> None:
    remote = Client(FUNCTIONS, store=HttpStore(server, SECRET), endpoint="http://app.test/slay")
    direct = Client(FUNCTIONS, store=PostgresStore(pg_url))
    async with remote, direct:
        # open() registered the app's cron schedule through the server.
        (schedule,) = await remote.list_schedules()
        assert (schedule.event, schedule.cron, schedule.app) == (
            "testing/cron-test",
            "* * * * *",
            "http://app.test/slay",
        )
        # The server fires that schedule every minute: stop it, and cancel a tick that
        # may have fired already, so no run of it is claimed or counted below.
        await direct.store.set_schedules([], app="http://app.test/slay", events=[schedule.event])
        await direct.cancel_runs(event=schedule.event)
        assert await remote.pause_queue("mail", actor="cli:ann@host") is True
        await remote.send_event("mail/send", {"to": "ops"})
        waiting = await remote.send_event("test/event", {"test_string": "x"})
        # A worker (here: this test) claims the general run and suspends it on a wait.
        (claim,) = await direct.store.claim(
            queues=None, limit=5, lease_for=timedelta(minutes=1), owner="host-a:1"
        )
        assert claim.lease.run_id == waiting  # the paused queue's run is not claimed
        assert [w.owner for w in await remote.list_workers()] == ["host-a:1"]
        pending = PendingStep(
            name="ok",
            kind="wait",
            event="x/ok",
            match_field="id",
            match_value=3,
            delay=timedelta(hours=1),
        )
        await direct.store.commit(claim.lease, Transition(steps=[], outcome=Suspend([pending])))
        (wait,) = await remote.list_waits(event="x/ok")
        assert (wait.run_id, wait.step, wait.match_field, wait.match_value) == (
            waiting,
            "ok",
            "id",
            3,
        )
        assert await remote.list_waits(event="other") == []
        queues = {q.name: q for q in await remote.list_queues()}
        assert (queues["mail"].due, queues["mail"].paused) == (1, True)
        assert (queues["general"].waiting, queues["general"].paused) == (1, False)
        assert await remote.list_workers() == []
        # Bad input is a 400: an input error, and nothing changed.
        with pytest.raises(StoreInputError, match="queue name must be a non-empty string"):
            await remote.pause_queue("")
        with pytest.raises(StoreInputError, match="limit must be an integer"):
            await remote.list_waits(limit=0)
        assert await remote.resume_queue("mail") is True
        assert [q.paused for q in await direct.list_queues()] == [False, False]


async def test_run_stats_through_the_server(server: str, pg_url: str) -> None:
    remote = Client(FUNCTIONS, store=HttpStore(server, SECRET), endpoint="http://app.test/slay")
    async with remote:
        await remote.send_event("mail/send", {"to": "ops"})
        stats = await remote.run_stats(window="10m")
        assert stats.now - stats.since == timedelta(minutes=10)
        assert sum(m.started for m in stats.minutes) >= 1  # and the cron's runs, if it fired
        with pytest.raises(StoreInputError, match="window must be a timedelta"):
            await remote.run_stats(window="2d")
