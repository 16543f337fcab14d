"""The ingest RPC over a real socket: HttpStore round trips; bad calls change nothing."""

from __future__ import annotations

import secrets
import time

import httpx
import msgspec
import psycopg
import pytest

import slayq
from examples.app.functions import FUNCTIONS
from slayq.client import Client
from slayq.errors import InputError, RunNotFoundError, StoreError, StoreInputError
from slayq.http_store import HttpStore
from slayq.model import RunId, Schedule
from slayq.store.postgres import PostgresStore
from slayq.transport.signing import sign
from tests.integration.servers import SECRET

pytestmark = pytest.mark.anyio

# The example app's functions but its every-minute cron: registered through the server,
# its tick would start a run of "general" too whenever a test crossed a minute boundary.
UNSCHEDULED = [f for f in FUNCTIONS if f.cron is None]


async def test_http_store_sends_reads_and_cancels_through_the_server(
    server: str, pg_url: str
) -> None:
    client = Client(UNSCHEDULED, store=HttpStore(server, SECRET), endpoint="http://app.test/slay")
    async with client:
        run_id = await client.send_event("testing/cancel-on-test", {"some_data_id": "x"})
        assert run_id is not None
        run = await client.get_run(run_id)
        assert (run.status, run.endpoint) == ("queued", "http://app.test/slay")
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{server}/health")).json()
        # The server serves only "nobody-serves-this": the run is visibly not in limbo.
        assert health["unserved_queues"] == {"general": 1}
        assert await client.cancel(run_id)
        assert (await client.get_run(run_id)).status == "cancelled"
        with pytest.raises(RunNotFoundError):
            await client.get_run(RunId("01900000-0000-7000-8000-000000000000"))
        with pytest.raises(StoreError, match="only the slayq server claims"):
            await client.store.next_wakeup()
    # What went through HTTP is in the database.
    async with Client(FUNCTIONS, store=PostgresStore(pg_url)) as direct:
        assert (await direct.get_run(run_id)).status == "cancelled"


async def test_bad_ingest_calls_are_refused_and_change_nothing(server: str, pg_url: str) -> None:
    body = msgspec.json.encode({"events": []})
    good = sign(body, SECRET)
    url = f"{server}/ingest/send-events"
    cases = {
        "forged": (body, sign(body, "not-the-secret-0123456789abcdef")),
        "old": (body, sign(body, SECRET, now=time.time() - 60)),
        "truncated": (body[:-2], good),
        "unsigned": (body, {}),
    }
    async with httpx.AsyncClient() as http:
        for name, (content, headers) in cases.items():
            response = await http.post(url, content=content, headers=headers)
            assert response.status_code == 401, (name, response.text)
            assert SECRET not in response.text
        huge = b"x" * (9 * 1024 * 1024)
        response = await http.post(url, content=huge, headers=sign(huge, SECRET))
        assert response.status_code == 413
        garbage = b'{"events": [{"name": 1}]}'
        response = await http.post(url, content=garbage, headers=sign(garbage, SECRET))
        assert response.status_code == 400
        assert "events" in response.json()["error"]
        replayed = sign(body, SECRET)
        first = await http.post(url, content=body, headers=replayed)
        again = await http.post(url, content=body, headers=replayed)
        assert (first.status_code, again.status_code) == (200, 401)
        assert "replays are refused" in again.json()["error"]
        health = await http.get(f"{server}/health")
        assert health.json() == {"status": "ok", "unserved_queues": {}}
    async with Client(FUNCTIONS, store=PostgresStore(pg_url)) as direct:
        # Nothing was stored: a fresh send starts the first run of the database.
        run_id = await direct.send_event("test/callee")
        assert run_id is not None
        assert (await direct.get_run(run_id)).status == "queued"


async def test_apps_register_their_own_schedules_through_the_server(
    server: str, pg_url: str
) -> None:
    @slayq.function(event="worker/tick", cron="0 * * * *")
    async def worker_tick(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
        pass

    async def stored() -> list[tuple[str, str | None]]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cursor = await conn.execute("select event, app from slayq.schedules order by event")
            return [(event, app) for event, app in await cursor.fetchall()]

    app = Client(FUNCTIONS, store=HttpStore(server, SECRET), endpoint="http://app.test/slay")
    worker = Client([worker_tick], store=PostgresStore(pg_url), app="reports-worker")
    async with app:  # registers testing/cron-test through the ingest RPC
        await worker.register_schedules()
        await app.register_schedules()  # the app restarts: the worker's schedule stays
        assert await stored() == [
            ("testing/cron-test", "http://app.test/slay"),
            ("worker/tick", "reports-worker"),
        ]
        bad = Schedule(
            event="testing/cron-test",
            cron="0 0 31 2 *",
            template=app.registry.schedules()[0].template,
        )
        with pytest.raises(StoreError, match=r"400.*never ticks"):
            await app.store.set_schedules([bad], app=app.app, events=["testing/cron-test"])
    await worker.aclose()
    assert [event for event, _ in await stored()] == ["testing/cron-test", "worker/tick"]


async def post_signed(server: str, method: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{server}/ingest/{method}", content=body, headers=sign(body, SECRET)
        )


async def test_a_deeply_nested_signed_body_is_a_400(server: str) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    body = b'{"events": [{"name": "test/callee", "data": {"x": ' + nested + b"}}]}"
    response = await post_signed(server, "send-events", body)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["error"]


async def test_an_invalid_cron_through_ingest_is_a_400_naming_it(server: str) -> None:
    client = Client(FUNCTIONS, store=HttpStore(server, SECRET), endpoint="http://app.test/slay")
    schedule = client.registry.schedules()[0]
    bad = msgspec.structs.replace(schedule, cron="every tuesday")
    body = msgspec.json.encode({"schedules": [bad], "app": client.app, "events": [schedule.event]})
    response = await post_signed(server, "set-schedules", body)
    assert response.status_code == 400, response.text
    assert "'every tuesday'" in response.json()["error"]
    with pytest.raises(InputError, match="every tuesday"):
        await client.store.set_schedules([bad], app=client.app, events=[schedule.event])
    await client.aclose()


async def test_a_value_the_database_refuses_is_a_400_and_http_store_raises_an_input_error(
    server: str,
) -> None:
    """A client refuses such a key itself; a sender of another version may not, and the
    server must then answer 400, not 503 (which callers would retry forever)."""
    async with Client(
        FUNCTIONS, store=HttpStore(server, SECRET), endpoint="http://app.test/slay"
    ) as client:
        event = client.registry.outgoing("test/callee", {})
        assert event.run is not None
        run = msgspec.structs.replace(event.run, key=secrets.token_hex(1_500))  # no compression
        with pytest.raises(StoreInputError) as caught:
            await client.store.send_events([msgspec.structs.replace(event, run=run)])
    assert "400" in str(caught.value)
    assert isinstance(caught.value, InputError)
