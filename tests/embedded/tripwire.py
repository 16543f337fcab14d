"""A port that stands for "the system PostgreSQL": it accepts connections and counts them,
so a test can point SLAY_Q_DATABASE_URL and PGHOST/PGPORT at it and then check that the
embedded path never came near it."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class Tripwire:
    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def env(self) -> dict[str, str]:
        """Every way a process could be steered to "the system PostgreSQL"."""
        url = f"postgresql://postgres@127.0.0.1:{self.port}/app"
        return {
            "SLAY_Q_DATABASE_URL": url,
            "SLAY_Q_TEST_DATABASE_URL": url,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": "app",
        }

    def __enter__(self) -> Tripwire:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()
        self._listener.close()
