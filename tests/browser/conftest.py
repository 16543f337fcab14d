"""The browser tests' world: one real server, one worker, one Chromium for this package.

- a fresh PostgreSQL database (tests/pgutil.py);
- ``python -m slayq.server`` on a free loopback port, serving the dashboard at /ui/
  behind HTTP Basic auth (SLAY_Q_UI_USER / SLAY_Q_UI_PASSWORD) - the deployment users
  run. It serves no queue the tests use, so it never runs their functions;
- an in-process worker (slayq.worker.Worker) in a thread of its own (an anyio blocking
  portal), serving every queue, running tests/browser/functions.py, so that a test can
  count on the worker's side which step handlers ran (and hold one at a gate);
- Debian's chromium, driven by Playwright's Python API through ``executable_path``
  (Playwright's own browser download is not used). ``bash scripts/test`` installs it
  (scripts/ensure-chromium); without it these tests fail, they never skip.

Tests share the server and database, so each one makes runs of its own (an ``order``
value of its own) and reads only those.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from playwright.sync_api import (
    Browser,
    BrowserContext,
    HttpCredentials,
    Page,
    Playwright,
    sync_playwright,
)

from slayq.client import Client
from slayq.model import RunId, RunInfo
from slayq.runtime.retry import RetryPolicy
from slayq.store.postgres import PostgresStore
from slayq.worker import Worker
from tests import pgutil
from tests.browser.functions import FUNCTIONS, GATES
from tests.integration.servers import REPO, free_port, start_server, stop, wait_until_up

T = TypeVar("T")

USER = "admin"
PASSWORD = "browser-" + secrets.token_hex(8)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("SLAY_Q_SCREENSHOTS", REPO / ".artifacts" / "screenshots"))
# How long a test waits for the page to show what it expects (live updates included).
EXPECT_MS = 15_000
DESKTOP = {"width": 1280, "height": 800}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@dataclass
class Dashboard:
    """The running server and worker, and calls into the worker's client."""

    url: str  # the dashboard's root, e.g. http://127.0.0.1:40123/ui
    portal: BlockingPortal
    client: Client

    def send(self, event: str, order: str) -> RunId:
        run_id = self.portal.call(lambda: self.client.send_event(event, {"order": order}))
        assert run_id is not None
        return run_id

    def get_run(self, run_id: str) -> RunInfo:
        return self.portal.call(self.client.get_run, RunId(run_id))

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` (async or not) on the worker's event loop."""
        return self.portal.call(fn, *args)

    def wait_for(self, run_id: str, *statuses: str, seconds: float = 20) -> RunInfo:
        deadline = time.monotonic() + seconds
        while True:
            run = self.get_run(run_id)
            if run.status in statuses:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} is {run.status}, not {statuses}")
            time.sleep(0.05)

    def page_url(self, path: str) -> str:
        return self.url + path


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with start_blocking_portal() as portal:
        url = portal.call(pgutil.fresh_database)
        process = None
        client = Client(FUNCTIONS, store=PostgresStore(url))
        try:
            config = tmp / "slay-config.json"
            config.write_text('{"queues": {"nobody-serves-this": {"concurrency": 1}}}')
            port = free_port()
            process = start_server(
                url,
                port,
                config,
                tmp / "server.out",
                env={"SLAY_Q_UI_USER": USER, "SLAY_Q_UI_PASSWORD": PASSWORD},
            )
            wait_until_up(f"http://127.0.0.1:{port}/health", process)
            portal.call(client.open)
            worker = Worker(
                client,
                retry_policy=RetryPolicy(
                    base=timedelta(milliseconds=100), cap=timedelta(seconds=1)
                ),
                poll_interval=timedelta(milliseconds=500),
            )
            running = portal.start_task_soon(worker.run)
            portal.call(worker.started.wait)
            try:
                yield Dashboard(f"http://127.0.0.1:{port}/ui", portal, client)
            finally:
                GATES.open_all()  # no handler left waiting for a test that failed
                portal.call(worker.stop)
                running.result(timeout=30)
        finally:
            if process is not None:
                stop(process)
                log = (tmp / "server.out").read_text(errors="replace")
                if "Traceback" in log:
                    print("--- server output ---\n" + log[-4000:])
            portal.call(client.aclose)
            portal.call(pgutil.drop_database, url)


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    # Package scope, not session: while Playwright's sync API is open, its event loop is
    # the thread's running loop, and every async test after this package would fail with
    # "Cannot run the event loop while another loop is running".
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found (no 'chromium' on PATH, no {CHROMIUM}): the browser tests "
            "need Debian's chromium package - run `bash scripts/ensure-chromium` "
            "(`bash scripts/test` does)",
            pytrace=False,
        )
    chromium = playwright.chromium.launch(executable_path=CHROMIUM)
    yield chromium
    chromium.close()


def open_context(browser: Browser, *, logged_in: bool = True, **options: Any) -> BrowserContext:
    credentials: HttpCredentials | None = (
        {"username": USER, "password": PASSWORD} if logged_in else None
    )
    context = browser.new_context(
        http_credentials=credentials,
        viewport=options.pop("viewport", DESKTOP),
        **options,
    )
    context.set_default_timeout(EXPECT_MS)
    return context


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A logged-in tab at desktop width (a context of its own: no state between tests)."""
    context = open_context(browser)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="package")
def screenshots() -> Path:
    """The folder for the dashboard's screenshots, emptied of a previous run's."""
    (SCREENSHOTS / "docs").mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("**/*.png"):
        old.unlink()
    return SCREENSHOTS
