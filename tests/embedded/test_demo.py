"""``bash scripts/demo``, the main job, completes on the embedded PostgreSQL with the
system PostgreSQL unreachable, printing every scenario's result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from slayq.embedded import free_port
from tests.embedded.tripwire import Tripwire

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [
    r"three-step retry\s+completed: result 'hello world from the demo' after 2 attempts "
    r"\(attempt 1 failed: 'Yoinks\.'\); attempt 2 replayed 2 finished step\(s\) from the memo and ran 1",
    r"durable sleep \(2s\)\s+completed: result 'hello world'",
    r"wait, answered\s+completed: result \{'fired': True, 'vals': \[12, 'cool'\]\}",
    r"wait, timing out \(3s\)\s+completed: result \{'fired': False, 'vals': \[12, 'cool'\]\}",
    r"invoke another function\s+completed: result 'hello world'",
    r"cancelled by an event\s+cancelled",
]


def test_the_demo_prints_every_scenario_and_stops_everything(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    port = free_port()
    with Tripwire() as wire:
        done = subprocess.run(
            ["bash", "scripts/demo", "--data-dir", str(data), "--port", str(port)],
            cwd=ROOT,
            env={**os.environ, **wire.env(), "SLAY_Q_DEMO_PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        for expected in EXPECTED:
            assert re.search(expected, done.stdout), f"{expected!r} not in:\n{done.stdout}"
        assert f"dashboard: http://127.0.0.1:{port}/ui/" in done.stdout
        assert done.stdout.rstrip().endswith("demo: stopped")
        assert not (data / "postgres" / "postmaster.pid").exists()
        assert wire.connections == 0, "the demo reached the system PostgreSQL"
