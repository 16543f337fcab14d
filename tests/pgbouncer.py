"""A real PgBouncer in transaction mode, in front of the test PostgreSQL.

Debian's ``pgbouncer`` package provides the binary (``scripts/test`` installs it when
missing). Each test session starts its own process on a free port with a generated ini.
It is stricter than a default transaction-mode PgBouncer: ``DISCARD ALL`` after every
transaction, so no session state (a ``search_path``, a prepared statement, a LISTEN)
survives to the next one even when the same server connection serves it. A default
PgBouncer lets it survive by chance and hands it to the next client instead; code that
works here does not depend on that chance.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _version(binary: str) -> tuple[int, int]:
    banner = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)", banner)
    if found is None:
        raise RuntimeError(f"{binary} --version said {banner!r}")
    return int(found[1]), int(found[2])


class PgBouncer:
    """``start()`` runs it, ``url(direct_url)`` is the same database through it."""

    def __init__(self, admin_url: str, directory: Path) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            raise RuntimeError(
                "pgbouncer is not installed: run the tests with `bash scripts/test` (it "
                "installs it) or `apt-get install pgbouncer`"
            )
        self.binary = binary
        self.version = _version(binary)
        self.directory = directory
        self.port = _free_port()
        self.log = directory / "pgbouncer.log"
        self._server = conninfo_to_dict(admin_url)
        self._process: subprocess.Popen[bytes] | None = None

    def _ini(self) -> str:
        host = self._server.get("host", "127.0.0.1")
        port = self._server.get("port", "5432")
        user = str(self._server.get("user", "postgres"))
        password = self._server.get("password")
        server = f"host={host} port={port}" + (f" password={password}" if password else "")
        lines = [
            "[databases]",
            f"* = {server}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.directory / 'users.txt'}",
            "pool_mode = transaction",
            "server_reset_query = DISCARD ALL",
            "server_reset_query_always = 1",
            "default_pool_size = 20",
        ]
        if self.version >= (1, 21):
            # Protocol-level prepared statements off, as in 1.18 (which has no such setting).
            lines.append("max_prepared_statements = 0")
        (self.directory / "users.txt").write_text(f'"{user}" ""\n')
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(self._ini())
        command = [self.binary, str(ini)]
        if os.geteuid() == 0:  # it refuses to run as root
            command[1:1] = ["-u", "postgres"]
            for path in (self.directory, ini, self.directory / "users.txt"):
                path.chmod(0o755 if path.is_dir() else 0o644)
        with open(self.log, "ab") as sink:
            self._process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log.read_text()[-2000:]}")
            try:
                with psycopg.connect(self.url(str(self._server.get("dbname", "postgres")))):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str, *, pooler: bool = False) -> str:
        """The URL of ``database`` (a name, or a URL whose dbname is taken) through it."""
        if "://" in database or "=" in database:
            database = str(conninfo_to_dict(database)["dbname"])
        user = quote(str(self._server.get("user", "postgres")))
        url = f"postgresql://{user}@127.0.0.1:{self.port}/{quote(database)}"
        return url + "?pooler=transaction" if pooler else url

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
