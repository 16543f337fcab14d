"""An app started without ``SLAY_Q_SECRET``: it fails at start-up with the clear message,
or, where no start-up hook runs, answers each delivery 500 with that one line."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from examples.app.functions import FUNCTIONS
from slayq.client import Client
from slayq.store.memory import MemoryStore
from slayq.transport import ClaimDelivery, encode_delivery, sign
from tests.integration.servers import free_port, start_app
from tests.integration.test_receiver_http import SECRET, claim_for, serve

pytestmark = pytest.mark.anyio

NO_SECRET = "no signing secret: set SLAY_Q_SECRET"


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLAY_Q_SECRET", "SLAY_Q_WORKER_SECRET", "SLAY_Q_PREVIOUS_SECRETS"):
        monkeypatch.delenv(name, raising=False)


async def test_the_example_app_without_a_secret_fails_at_start_up(
    pg_url: str, tmp_path: Path
) -> None:
    output = tmp_path / "app.out"
    app = start_app(pg_url, free_port(), output, secret=None)
    try:
        app.wait(timeout=30)
    except subprocess.TimeoutExpired:
        app.kill()
        app.wait()
        raise AssertionError("the app started without a secret") from None
    assert app.returncode != 0
    text = output.read_text()
    assert NO_SECRET in text
    assert text.count("Traceback") <= 1  # uvicorn's own report of the failed start-up


async def test_client_asgi_fails_its_lifespan_start_up_without_a_secret(
    no_secret_env: None,
) -> None:
    client = Client(FUNCTIONS, store=MemoryStore())
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}])

    async def receive() -> MutableMapping[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await client.asgi({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert NO_SECRET in sent[0]["message"]


async def test_without_a_lifespan_each_delivery_is_a_500_with_one_line_logged_once(
    no_secret_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    client = Client(FUNCTIONS, store=MemoryStore())
    app = Starlette(routes=[Route("/api/slayq", client.asgi, methods=["POST"])])
    body = encode_delivery(ClaimDelivery(claim_for("test/callee")))
    with caplog.at_level(logging.INFO), serve(app) as url:
        async with httpx.AsyncClient() as http:
            answers = [
                await http.post(url, content=body, headers=sign(body, SECRET)) for _ in range(3)
            ]
            await anyio.lowlevel.checkpoint()
    assert [a.status_code for a in answers] == [500] * 3
    assert all(NO_SECRET in a.json()["error"] for a in answers)
    logged = [r for r in caplog.records if NO_SECRET in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is None
    assert "Traceback" not in caplog.text
