"""``slayq dev --app MODULE:client``: the whole product on this machine, no services needed.

It starts an embedded PostgreSQL in the data folder (``.slayq``, kept between runs;
``--fresh`` wipes it), applies the migrations, runs the app's functions (an in-process
worker; or, when the client has an endpoint, the server delivering to it), serves the
dashboard on 127.0.0.1 without a password, and prints where everything is. Everything it
starts gets ``SLAY_Q_DATABASE_URL`` (and ``SLAY_Q_SECRET``) in its environment.
SIGINT or SIGTERM stops it all, the database last; the data stays.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click

from slayq.cli.dashboard import DEFAULT_PORT as DASHBOARD_PORT
from slayq.cli.dev_setup import config_path, secret
from slayq.cli.session import CliError
from slayq.cli.supervisor import Supervisor
from slayq.errors import SlayqError

if TYPE_CHECKING:
    from slayq.client import Client
    from slayq.embedded import EmbeddedPostgres

# The server's own default port (SLAY_Q_PORT); the CLI does not import the server.
SERVER_PORT = 7700


def _say(text: str) -> None:
    click.echo(f"slayq dev: {text}", err=True)


def start_database(data_dir: Path, *, fresh: bool, port: int | None) -> EmbeddedPostgres:
    from slayq.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(data_dir / "postgres", port=port)
    if fresh and pg.initialized:
        _say(f"--fresh: removing the database in {pg.folder}")
        pg.wipe()
    if fresh:
        for leftover in ("secret", "slay-config.json"):
            (data_dir / leftover).unlink(missing_ok=True)
    _say("new database (first run in this folder)" if not pg.initialized else "starting")
    pg.start()
    return pg


def migrate(url: str) -> list[str]:
    from slayq.store.postgres import migrate as apply

    return anyio.run(lambda: apply(url))


def load_app(target: str) -> Client:
    from slayq.worker.__main__ import load_client

    return load_client(target)


def the_block(
    *, app: str, client: Client, url: str, dashboard: str, server: str | None, data_dir: Path
) -> str:
    """What ``slayq dev`` prints once everything answers: where it all is."""
    count = len(client.functions)
    first = client.functions[0].event if client.functions else "my/event"
    if server is None:
        runs = f"in-process worker: {count} function(s) of {app}"
    else:
        runs = f"the server on {server}, delivering to {client.endpoint} ({count} function(s))"
    lines = [
        "",
        f"slayq dev is running (data in {data_dir}, kept; Ctrl-C stops it all)",
        f"  dashboard   {dashboard}",
        f"  database    {url}",
        f'              psql "{url}"   or   export SLAY_Q_DATABASE_URL={url}',
        f"  functions   {runs}",
        f"  send event  SLAY_Q_DATABASE_URL={url} slayq events send {first} --app {app} "
        "--data '{...}'",
    ]
    if server is not None:
        lines.append(
            "  your app    start it with SLAY_Q_DATABASE_URL and SLAY_Q_SECRET from "
            f"{data_dir / 'secret'} (or pass --run 'uvicorn ...' and slayq dev sets both)"
        )
    return "\n".join(lines) + "\n\n"  # a blank line ends it, for scripts that read it


@click.command("dev")
@click.option(
    "--app",
    "target",
    required=True,
    metavar="MODULE:CLIENT",
    help="The app's slayq.Client, like myapp.jobs:client (imported from the current folder).",
)
@click.option(
    "--config",
    "config",
    metavar="FILE",
    help="slay-config.json (default: ./slay-config.json, else one made from the functions).",
)
@click.option(
    "--data-dir",
    default=".slayq",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the database and the secret are kept between runs.",
)
@click.option("--fresh", is_flag=True, help="Wipe the data folder's database first.")
@click.option(
    "--port",
    default=DASHBOARD_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The dashboard's port on 127.0.0.1.",
)
@click.option(
    "--server-port",
    default=SERVER_PORT,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The server's port, when the client has an endpoint.",
)
@click.option(
    "--pg-port",
    type=click.IntRange(1, 65535),
    help="PostgreSQL's port on 127.0.0.1 (default: the one used last, else a free one).",
)
@click.option(
    "--run",
    "commands",
    multiple=True,
    metavar="COMMAND",
    help="Also start COMMAND (like your web app) with the same environment; repeatable.",
)
def dev(
    target: str,
    config: str | None,
    data_dir: Path,
    fresh: bool,
    port: int,
    server_port: int,
    pg_port: int | None,
    commands: tuple[str, ...],
) -> None:
    """Run everything on this machine: an embedded PostgreSQL, your functions, the dashboard."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir.resolve()
    try:
        pg = start_database(data_dir, fresh=fresh, port=pg_port)
    except SlayqError as exc:
        raise CliError(str(exc)) from None
    supervisor = Supervisor(env={})
    supervisor.catch_signals()
    try:
        status = _run(pg, supervisor, target, config, data_dir, port, server_port, commands)
    except (SlayqError, RuntimeError) as exc:
        _say(f"stopping: {' '.join(str(exc).split())}")
        status = 1
    finally:
        supervisor.stop_all()
        pg.stop()
        _say(f"stopped; the data is kept in {data_dir}")
    sys.exit(status)


def _run(
    pg: EmbeddedPostgres,
    supervisor: Supervisor,
    target: str,
    config: str | None,
    data_dir: Path,
    port: int,
    server_port: int,
    commands: tuple[str, ...],
) -> int:
    url = pg.url()
    # Before the app is imported: its client reads the URL when its module is loaded.
    os.environ["SLAY_Q_DATABASE_URL"] = url
    os.environ.setdefault("SLAY_Q_SECRET", secret(data_dir))
    applied = migrate(url)
    _say(f"applied {len(applied)} migration(s)" if applied else "schema up to date")
    client = load_app(target)
    config_file = str(config_path(config, client, data_dir))
    supervisor.env = dict(os.environ)
    server = None
    if client.endpoint is None:
        supervisor.python("worker", "-m", "slayq.worker", target, config_file)
    else:
        server = f"http://127.0.0.1:{server_port}"
        supervisor.env = {**supervisor.env, "SLAY_Q_PORT": str(server_port)}
        supervisor.python("server", "-m", "slayq.server", config_file)
    supervisor.python("dashboard", "-m", "slayq", "ui", "--port", str(port))
    for command in commands:
        argv = shlex.split(command)
        if not argv or shutil.which(argv[0]) is None:
            raise CliError(f"--run {command!r}: no program {argv[0] if argv else ''!r} found")
        supervisor.start(argv[0], argv)
    supervisor.wait_for_port(port)
    if server is not None:
        supervisor.wait_for_port(server_port)
    dashboard = f"http://127.0.0.1:{port}/ui/"
    click.echo(
        the_block(
            app=target,
            client=client,
            url=url,
            dashboard=dashboard,
            server=server,
            data_dir=data_dir,
        ),
        nl=False,
    )
    sys.stdout.flush()
    ended = supervisor.run_until_stopped()
    if ended is not None:
        _say(f"{ended.name} exited with status {ended.process.returncode}; stopping the rest")
        return 1
    _say("stopping")
    return 0
