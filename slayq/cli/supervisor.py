"""The processes ``slayq dev`` starts, and stopping them all, in order, on a signal.

Each child runs in a session of its own: Ctrl-C in the terminal reaches ``slayq dev``
alone, which then stops the children itself (SIGTERM: workers and the server drain their
runs) before it stops the database they run on.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

GRACE_SECONDS = 20.0


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class Supervisor:
    env: Mapping[str, str]
    children: list[Child] = field(default_factory=list)
    stopping: bool = False

    def start(self, name: str, argv: Sequence[str]) -> Child:
        process = subprocess.Popen(
            list(argv), env=dict(self.env), stdin=subprocess.DEVNULL, start_new_session=True
        )
        child = Child(name, process)
        self.children.append(child)
        return child

    def python(self, name: str, *args: str) -> Child:
        """``python -m ...`` in this interpreter (the one slayq is installed in)."""
        return self.start(name, [sys.executable, *args])

    def exited(self) -> Child | None:
        """A child that ended on its own, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        """Until something accepts connections on 127.0.0.1:``port``; raises if a child
        ends first or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = self.exited()
            if ended is not None:
                raise RuntimeError(
                    f"{ended.name} exited with status {ended.process.returncode} "
                    "while starting (its output is above)"
                )
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f}s")

    def catch_signals(self) -> None:
        """SIGINT and SIGTERM set ``stopping`` (the loop in ``run_until_stopped`` acts)."""

        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def run_until_stopped(self) -> Child | None:
        """Until a signal (returns None) or a child ending on its own (returns it)."""
        while not self.stopping:
            ended = self.exited()
            if ended is not None:
                return ended
            time.sleep(0.2)
        return None

    def stop_all(self, grace: float = GRACE_SECONDS) -> None:
        """SIGTERM to every child still running, newest first; SIGKILL after ``grace``."""
        for child in reversed(self.children):
            if child.process.poll() is None:
                os.kill(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"slayq dev: {child.name} did not stop in {grace:.0f}s: killed", flush=True)
                child.process.kill()
                child.process.wait()
