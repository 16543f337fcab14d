"""``python -m slayq.worker myapp.module:client slay-config.json [--queues a,b]``
``python -m slayq.worker myapp.module:client [--concurrency N]``

Runs the functions of ``client`` in this process, claiming from its store (Postgres) the
queues the config file defines, each under its cluster-wide concurrency. Without a config
file it claims from every queue, at most ``--concurrency`` runs at once in this process
and no limit across processes (add processes to run more), claiming the next runs while
these run (``claim_ahead``). SIGTERM or SIGINT drains in-flight runs within
``--grace``, then hands back what is left. ``--metrics-port`` serves Prometheus metrics
on ``/metrics``; ``--log-format json`` writes one JSON object per log line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import prometheus_client
import psycopg
from psycopg.conninfo import conninfo_to_dict

from slayq.client import Client
from slayq.errors import ConfigError, InputError, SlayqError
from slayq.runtime.durations import parse_duration
from slayq.store.postgres import parse_url
from slayq.telemetry.logs import configure_logging
from slayq.worker.config import load_config
from slayq.worker.worker import Worker

if TYPE_CHECKING:
    from slayq.store.protocol import QueueLimit

logger = logging.getLogger("slayq.worker")


def _database(client: Client) -> str:
    """Where the client's store is, without credentials: host:port/dbname."""
    url = getattr(client.store, "url", None)
    if not isinstance(url, str):
        return type(client.store).__name__
    try:
        info = conninfo_to_dict(parse_url(url).url)
    except (psycopg.ProgrammingError, InputError):
        return "?"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def load_client(target: str) -> Client:
    """Import ``module.path:attribute`` and check that it is a ``slayq.Client``."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"{target!r}: give the client as module.path:attribute, like myapp.jobs:client"
        )
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{target!r}: cannot import {module_name!r}: {exc}") from None
    if not hasattr(module, attribute):
        public = sorted(name for name in vars(module) if not name.startswith("_"))
        clients = [name for name in public if isinstance(getattr(module, name), Client)]
        hint = f"; it has {clients}" if clients else f" (it defines {public[:20]})"
        raise ConfigError(f"{target!r}: module {module_name} has no {attribute!r}{hint}")
    client = getattr(module, attribute)
    if not isinstance(client, Client):
        raise ConfigError(
            f"{target!r}: {attribute!r} in {module_name} is a {type(client).__name__}, "
            "not a slayq.Client"
        )
    return client


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m slayq.worker", description=__doc__)
    parser.add_argument("client", help="the app's slayq.Client, as module.path:attribute")
    parser.add_argument(
        "config",
        nargs="?",
        help="slay-config.json: queues and their cluster-wide concurrency; without it, "
        "every queue, --concurrency runs at once in this process",
    )
    parser.add_argument(
        "--queues", help="comma-separated queues (or aliases) of the config to serve; default all"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="without a config: runs at once in this process, no limit across processes (10)",
    )
    parser.add_argument(
        "--claim-ahead",
        type=int,
        help="without a config: runs claimed beyond --concurrency, to start as slots free "
        "up (default: up to twice --concurrency, fewer for slow runs); 0 for none",
    )
    parser.add_argument("--grace", default="30s", help="how long to drain on shutdown (30s)")
    parser.add_argument(
        "--lease",
        default="30s",
        help="lease length; a dead worker's runs are taken over after it (30s)",
    )
    parser.add_argument(
        "--retention",
        default="7d",
        help="remove finished runs older than this (7d); 'off' keeps them",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log lines (text)"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port's /metrics"
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", help="address for --metrics-port (0.0.0.0)"
    )
    return parser.parse_args(argv)


def queue_limits(args: argparse.Namespace) -> list[QueueLimit] | None:
    """The config's queue limits (``--queues`` of them), or None: every queue, with
    ``--concurrency`` slots in this process and no cluster-wide limit."""
    if args.config is None:
        if args.queues:
            raise ConfigError("--queues picks queues of a config file: give one (slay-config.json)")
        if args.concurrency is not None and args.concurrency < 1:
            raise ConfigError(f"--concurrency is {args.concurrency}; it must be at least 1")
        if args.claim_ahead is not None and args.claim_ahead < 0:
            raise ConfigError(f"--claim-ahead is {args.claim_ahead}; it must be 0 or more")
        return None
    for flag, value in (("--concurrency", args.concurrency), ("--claim-ahead", args.claim_ahead)):
        if value is not None:
            raise ConfigError(
                f"{flag} is for a worker without a config; {args.config} sets each queue's "
                "concurrency, across every process (nothing is claimed ahead under it)"
            )
    config = load_config(args.config)
    return config.queue_limits(args.queues.split(",") if args.queues else None)


async def serve(args: argparse.Namespace) -> None:
    queues = queue_limits(args)
    client = load_client(args.client)
    worker = Worker(
        client,
        queues=queues,
        concurrency=args.concurrency or 10,
        claim_ahead=args.claim_ahead,
        grace=parse_duration(args.grace, what="--grace"),
        lease_for=parse_duration(args.lease, what="--lease"),
        retention=None
        if args.retention == "off"
        else parse_duration(args.retention, what="--retention"),
        # The queue gauges cost a query: only made when someone can read them.
        queue_metrics_interval=None if args.metrics_port is None else timedelta(seconds=15),
    )
    await client.open()
    if args.metrics_port is not None:
        # A daemon thread: scrapes never wait on the event loop running the handlers.
        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_host)
        logger.info("metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    served = (
        f"all, {args.concurrency or 10} at once in this process, "
        f"{'up to ' if worker.claim_ahead_adapts else ''}{worker.claim_ahead} claimed ahead"
        if queues is None
        else ", ".join("/".join(limit.names) + f"={limit.concurrency}" for limit in queues)
    )
    logger.info(
        "worker %s: %d function(s), queues %s, database %s",
        worker.owner,
        len(client.registry.functions),
        served,
        _database(client),
    )
    try:
        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        logger.info("%s: draining", signal.Signals(signum).name)
                        worker.stop()
                        return

            group.start_soon(stop_on_signal)
            await worker.run()
            group.cancel_scope.cancel()
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        anyio.run(serve, args)
    except SlayqError as exc:
        sys.exit(f"slayq.worker: {exc}")


if __name__ == "__main__":
    main()
