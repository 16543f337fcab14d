"""With no database configured, the worker, the server and the CLI say how to get one
(``slayq dev``, or set SLAY_Q_DATABASE_URL) in one line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slayq.errors import ConfigError
from slayq.store.postgres import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "server" / "slay-config.sample.json")


@pytest.mark.anyio
@pytest.mark.parametrize("url", ["", "   "])
async def test_a_blank_database_url_is_refused_naming_slayq_dev(url: str) -> None:
    # libpq would take a blank URL as "all defaults" and reach whatever PG* names.
    store = PostgresStore(url)  # built at import time by apps: not refused yet
    with pytest.raises(ConfigError, match=r"slayq dev .*SLAY_Q_DATABASE_URL=postgresql://"):
        await store.open()


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "slayq.worker", "examples.app.main:client", CONFIG],
        ["-m", "slayq.server", CONFIG],
        ["-m", "slayq", "runs", "list"],
    ],
    ids=["worker", "server", "cli"],
)
def test_without_a_database_url_each_entry_point_says_how_to_get_one(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SLAY_Q_DATABASE_URL"}
    env["SLAY_Q_SECRET"] = "x" * 64
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "slayq dev" in lines[0]
    assert "SLAY_Q_DATABASE_URL" in lines[0]
