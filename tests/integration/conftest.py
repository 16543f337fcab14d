"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import free_port, start_server, stop, wait_until_up


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[str]:
    """``python -m slayq.server`` on its own database, serving no queue the tests use:
    its ingest RPC answers, and no run is delivered behind a test's back."""
    config = tmp_path / "slay-config.json"
    config.write_text('{"queues": {"nobody-serves-this": {"concurrency": 1}}}')
    port = free_port()
    process = start_server(pg_url, port, config, tmp_path / "server.out")
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
