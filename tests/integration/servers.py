"""Real processes on loopback for end-to-end tests: the example app and the slayq server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SECRET = "e2e-secret-0123456789abcdef-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    command: list[str], env: dict[str, str], output: Path, *, unset: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """Start ``command`` with ``env`` added to ours, less the variables in ``unset``."""
    child_env = {k: v for k, v in {**os.environ, **env}.items() if k not in unset}
    with open(output, "ab") as sink:  # the child keeps its own copy
        return subprocess.Popen(
            command, cwd=REPO, env=child_env, stdout=sink, stderr=subprocess.STDOUT
        )


def start_app(
    url: str, port: int, output: Path, *, secret: str | None = SECRET
) -> subprocess.Popen[bytes]:
    """The example app; with ``secret=None``, no secret is in its environment at all."""
    env = {"SLAY_Q_DATABASE_URL": url, "APP_URL": f"http://127.0.0.1:{port}"}
    if secret is not None:
        env["SLAY_Q_SECRET"] = secret
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "examples.app.main:app",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--log-level",
        "warning",
    ]
    unset = () if secret is not None else ("SLAY_Q_SECRET", "SLAY_Q_WORKER_SECRET")
    return spawn(command, env, output, unset=unset)


def start_server(
    url: str,
    port: int,
    config: Path,
    output: Path,
    *extra: str,
    cron_url: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        "SLAY_Q_DATABASE_URL": url,
        "SLAY_Q_SECRET": SECRET,
        "SLAY_Q_PORT": str(port),
        **(env or {}),
    }
    if cron_url is not None:
        env["SLAY_Q_CRON_URL"] = cron_url
    command = [sys.executable, "-m", "slayq.server", str(config), "--grace", "5s", *extra]
    return spawn(command, env, output)


def wait_until_up(url: str, process: subprocess.Popen[bytes], *, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args!r} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up in {seconds}s")


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
