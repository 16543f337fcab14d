"""The main job, for real: ``bash scripts/demo`` (or ``python -m examples.demo [--keep]``).

It starts ``slayq dev`` on a fresh embedded PostgreSQL with the example app
(``examples/app``: the Slay Q documents' functions) behind the slayq server, each a real
process; sends the seed's events through the app's HTTP API; prints each run's result as
it completes; then stops everything (``--keep`` leaves it running for the dashboard).
Needs nothing but Python and ``slayq[embedded]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from slayq.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
FINISHED = ("completed", "failed", "cancelled")
DEADLINE_SECONDS = 45.0


@dataclass
class Scenario:
    title: str
    event: str
    data: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    started: float = 0.0


SCENARIOS = [
    Scenario("three-step retry", "test/event", {"test_string": "from the demo"}),
    Scenario("durable sleep (2s)", "testing/sleep-test"),
    Scenario("wait, answered", "testing/waits-on-test", {"waiting_for_id": "w1"}),
    Scenario(
        "wait, timing out (3s)", "testing/waits-on-test", {"waiting_for_id": "w2", "timeout": "3s"}
    ),
    Scenario("invoke another function", "test/caller"),
    Scenario("cancelled by an event", "testing/cancel-on-test", {"some_data_id": "c1"}),
]


def describe(scenario: Scenario, run: dict[str, Any]) -> str:
    """One line for a finished run: what it shows."""
    seconds = time.monotonic() - scenario.started
    head = f"[{seconds:5.1f}s] {scenario.title:<26} {run['status']}"
    if run["status"] == "cancelled":
        return f"{head}: a second testing/cancel-on-test with some_data_id c1 cancelled it"
    detail = f"result {run['result']!r}"
    if scenario.event == "test/event":
        history = run.get("history") or []
        first = history[0].get("error") if history else None
        failed = f" (attempt 1 failed: {first['message']!r})" if first else ""
        detail += f" after {run['attempts']} attempts{failed}"
        if len(history) > 1:
            last = history[-1]
            detail += (
                f"; attempt 2 replayed {last['replayed']} finished step(s) from the memo "
                f"and ran {last['executed']}"
            )
    return f"{head}: {detail}"


def start_dev(
    data_dir: Path, dashboard_port: int, app_port: int, log: Path
) -> subprocess.Popen[str]:
    env = {**os.environ, "APP_URL": f"http://127.0.0.1:{app_port}", "PYTHONPATH": str(ROOT)}
    app = f"{sys.executable} -m uvicorn examples.app.main:app --port {app_port} --log-level warning"
    argv = [
        sys.executable,
        "-m",
        "slayq",
        "dev",
        "--app",
        "examples.app.main:client",
        "--data-dir",
        str(data_dir),
        "--fresh",
        "--port",
        str(dashboard_port),
        "--server-port",
        str(free_port()),
        "--run",
        app,
    ]
    with log.open("w") as sink:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # our Ctrl-C is forwarded, once, by stop()
        )


def read_block(dev: subprocess.Popen[str], log: Path) -> str:
    """The block ``slayq dev`` prints once everything answers (it ends with a blank line)."""
    assert dev.stdout is not None
    lines: list[str] = []
    for line in dev.stdout:
        if line.strip() or lines:
            lines.append(line)
        if lines and not line.strip() and len(lines) > 1:
            return "".join(lines)
    sys.exit(f"demo: slayq dev stopped before it was ready; its log:\n{log.read_text()}")


def database_url(block: str) -> str:
    return next(
        line.split()[1] for line in block.splitlines() if line.strip().startswith("database")
    )


def wait_for_app(base: str, dev: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and dev.poll() is None:
        try:
            httpx.get(f"{base}/runs/none", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    sys.exit("demo: the example app did not start (see the log)")


def play(base: str) -> bool:
    """Send every scenario's events; print each result as its run finishes."""
    with httpx.Client(base_url=base, timeout=10) as http:

        def trigger(event: str, data: dict[str, Any]) -> str:
            answer = http.post(f"/trigger/{event}", json=data)
            answer.raise_for_status()
            return str(answer.json()["run_id"])

        for scenario in SCENARIOS:
            scenario.started = time.monotonic()
            scenario.run_id = trigger(scenario.event, scenario.data)
        time.sleep(0.5)
        # The event that answers the first wait; the one that cancels the first sleeper
        # (it also starts a run of its own, which sleeps 8 hours).
        trigger("testing/waited-for-test", {"waiting_for_id": "w1"})
        trigger("testing/cancel-on-test", {"some_data_id": "c1"})
        pending = list(SCENARIOS)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while pending and time.monotonic() < deadline:
            for scenario in list(pending):
                run = http.get(f"/runs/{scenario.run_id}").json()
                if run["status"] in FINISHED:
                    print(describe(scenario, run), flush=True)
                    pending.remove(scenario)
            time.sleep(0.2)
    for scenario in pending:
        print(f"demo: {scenario.title} did not finish in {DEADLINE_SECONDS:.0f}s", flush=True)
    return not pending


def stop(dev: subprocess.Popen[str]) -> None:
    if dev.poll() is None:
        dev.send_signal(signal.SIGTERM)
    dev.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bash scripts/demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave it running (Ctrl-C stops)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".slayq" / "demo")
    parser.add_argument("--port", type=int, default=7701, help="the dashboard's port (7701)")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    log = args.data_dir / "dev.log"
    app_port = free_port()
    print("demo: starting slayq dev (embedded PostgreSQL, the server, the example app)...")
    dev = start_dev(args.data_dir, args.port, app_port, log)
    try:
        block = read_block(dev, log)
        print(block, end="", flush=True)
        base = f"http://127.0.0.1:{app_port}"
        wait_for_app(base, dev)
        print(f"demo: the example app is on {base}; sending the seed's events\n", flush=True)
        ok = play(base)
        print(f"\ndemo: the dashboard: http://127.0.0.1:{args.port}/ui/  (logs: {log})")
        if args.keep:
            print(f"demo: kept running; psql {database_url(block)}; Ctrl-C stops it", flush=True)
            dev.wait()
    except KeyboardInterrupt:
        ok = True
    finally:
        stop(dev)
    print("demo: stopped" + ("" if ok else " (some scenarios did not finish)"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
