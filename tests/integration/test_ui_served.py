"""The dashboard over real sockets and PostgreSQL: served by ``python -m slayq.server``
at /ui/ only with a password (and read-only on request), and by ``slayq ui``."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ParamSpec

import anyio
import httpx
import pytest

from tests.integration.servers import free_port, spawn, start_server, stop, wait_until_up

pytestmark = pytest.mark.anyio

P = ParamSpec("P")


def threaded(test: Callable[P, None]) -> Callable[P, Awaitable[None]]:
    """An async test running ``test`` in a thread: its blocking HTTP calls and process
    waits stay off the event loop that the async fixtures (the database) run on."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        await anyio.to_thread.run_sync(functools.partial(test, *args, **kwargs))

    return run


CONFIG = '{"queues": {"nobody-serves-this": {"concurrency": 1}}}'


def serve(pg_url: str, tmp_path: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
    config = tmp_path / "slay-config.json"
    config.write_text(CONFIG)
    port = free_port()
    process = start_server(pg_url, port, config, tmp_path / "server.out", env=env)
    wait_until_up(f"http://127.0.0.1:{port}/health", process)
    return f"http://127.0.0.1:{port}", process


@threaded
def test_the_server_serves_the_dashboard_behind_basic_auth(pg_url: str, tmp_path: Path) -> None:
    base, process = serve(pg_url, tmp_path, {"SLAY_Q_UI_PASSWORD": "pw", "SLAY_Q_UI_USER": "ops"})
    try:
        assert httpx.get(f"{base}/ui/runs").status_code == 401
        assert httpx.get(f"{base}/ui/runs", auth=("ops", "nope")).status_code == 401
        page = httpx.get(f"{base}/ui/runs", auth=("ops", "pw"))
        assert page.status_code == 200 and 'data-testid="runs-table"' in page.text
        assert 'href="/ui/runs"' in page.text  # links carry the mount point
        assert 'data-testid="bulk-retry"' in page.text
        assert httpx.get(f"{base}/ui/static/htmx.min.js").status_code == 200
    finally:
        stop(process)
    assert "dashboard at http://127.0.0.1:" in (tmp_path / "server.out").read_text()


@threaded
def test_without_a_password_the_server_does_not_serve_it_and_says_so(
    pg_url: str, tmp_path: Path
) -> None:
    base, process = serve(pg_url, tmp_path, {"SLAY_Q_UI_PASSWORD": ""})
    try:
        assert httpx.get(f"{base}/ui/").status_code == 404
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        stop(process)
    log = (tmp_path / "server.out").read_text()
    assert "dashboard not served: set SLAY_Q_UI_PASSWORD" in log


@threaded
def test_read_only_hides_and_refuses_actions(pg_url: str, tmp_path: Path) -> None:
    env = {"SLAY_Q_UI_PASSWORD": "pw", "SLAY_Q_UI_READ_ONLY": "1"}
    base, process = serve(pg_url, tmp_path, env)
    try:
        with httpx.Client(base_url=base, auth=("admin", "pw")) as client:
            page = client.get("/ui/queues")
            assert page.status_code == 200 and "read-only" in page.text
            assert 'data-testid="queue-pause"' not in page.text
            token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
            assert token is not None
            refused = client.post("/ui/queues/general/pause", data={"csrf_token": token[1]})
            assert refused.status_code == 403 and "read-only" in refused.text
    finally:
        stop(process)


def ui_command(pg_url: str, tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "slayq", "--database-url", pg_url, "ui", *args]


@threaded
def test_slayq_ui_serves_the_dashboard_on_loopback(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    command = ui_command(pg_url, tmp_path, "--port", str(port))
    process = spawn(command, {"SLAY_Q_UI_PASSWORD": ""}, tmp_path / "ui.out")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ui/", process)
        page = httpx.get(f"http://127.0.0.1:{port}/ui/runs")
        assert page.status_code == 200 and 'data-testid="runs-table"' in page.text
        home = httpx.get(f"http://127.0.0.1:{port}/")
        assert home.status_code == 307 and home.headers["location"] == "/ui/"
    finally:
        stop(process)
    assert f"slayq ui: http://127.0.0.1:{port}/ui/" in (tmp_path / "ui.out").read_text()


@threaded
def test_slayq_ui_takes_the_password_when_given(pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    command = ui_command(pg_url, tmp_path, "--port", str(port), "--read-only")
    process = spawn(command, {"SLAY_Q_UI_PASSWORD": "pw"}, tmp_path / "ui.out")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ui/", process)
        assert httpx.get(f"http://127.0.0.1:{port}/ui/runs").status_code == 401
        page = httpx.get(f"http://127.0.0.1:{port}/ui/runs", auth=("admin", "pw"))
        assert page.status_code == 200 and 'data-testid="bulk-retry"' not in page.text
    finally:
        stop(process)


@pytest.mark.parametrize("host", ["0.0.0.0", "example.internal"])
@threaded
def test_slayq_ui_on_another_address_needs_a_password(
    pg_url: str, tmp_path: Path, host: str
) -> None:
    command = ui_command(pg_url, tmp_path, "--host", host, "--port", str(free_port()))
    env = {k: v for k, v in os.environ.items() if k != "SLAY_Q_UI_PASSWORD"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert f"serving the dashboard on {host} needs a password" in done.stderr
    assert "SLAY_Q_UI_PASSWORD" in done.stderr
