"""``python -m slayq.server slay-config.json`` (also the ``slayq-server`` command).

Runs next to PostgreSQL, 24/7: migrates the database, claims runs per queue and
delivers each, signed, to the endpoint of the app that sent it; serves ``/health`` and
the ingest RPC on ``SLAY_Q_PORT``. SIGTERM or SIGINT stops claiming, lets in-flight
deliveries finish within the grace period, and hands back the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import uvicorn

from slayq import ui
from slayq.errors import ConfigError, SlayqError
from slayq.runtime.durations import parse_duration
from slayq.runtime.limits import describe
from slayq.server.delivery import HttpExecutor
from slayq.server.http import create_app
from slayq.server.settings import settings_from_env
from slayq.store.postgres import PostgresStore
from slayq.telemetry.logs import configure_logging
from slayq.transport.deliverer import Deliverer
from slayq.transport.wire import Limits
from slayq.worker.config import load_config
from slayq.worker.dispatcher import Dispatcher

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.types import ASGIApp

    from slayq.server.settings import Settings
    from slayq.store.protocol import Store

logger = logging.getLogger("slayq.server")

# The runs of one claim are delivered together and their answers come back spread over a
# few milliseconds; a tick waits for the others to answer while each comes within this
# of the one before (5 times this in all, Dispatcher's GATHER_AT_MOST), so their commits
# share one transaction instead of the first taking a tick alone. The figures
# (bench_postgres --via server) are in docs/claiming.md, "Group commit"; 2 ms apart did
# no better than 1.
GATHER = timedelta(milliseconds=1)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the server drains its runs first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m slayq.server", description=__doc__)
    parser.add_argument("config", help="slay-config.json: queues and their concurrency")
    parser.add_argument("--grace", default="30s", help="how long to drain on shutdown (30s)")
    parser.add_argument("--delivery-timeout", default="30s", help="per delivery (30s)")
    parser.add_argument(
        "--retention", default="7d", help="remove finished runs older than this; 'off' keeps them"
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log lines (text)"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    settings = settings_from_env(os.environ)
    config = load_config(args.config)
    timeout = parse_duration(args.delivery_timeout, what="--delivery-timeout")
    store = PostgresStore(settings.database_url, listen_url=settings.listen_url)
    limits = Limits(body_bytes=settings.body_limit)
    # One kept-alive connection for each delivery that may be in flight at once.
    connections = sum(limit.concurrency for limit in config.queue_limits())
    deliverer = Deliverer(
        settings.secrets[0],
        timeout=timeout.total_seconds(),
        limits=limits,
        connections=max(1, connections),
    )
    executor = HttpExecutor(
        deliverer,
        release=store.release,
        allowed_endpoints=config.allowed_endpoints,
        fallback_endpoint=settings.cron_url,
    )
    refusal = executor.refusal(settings.cron_url) if settings.cron_url else None
    if refusal is not None:
        await deliverer.aclose()
        raise ConfigError(f"SLAY_Q_CRON_URL: {refusal}; add a prefix of it to {args.config}")
    await store.open()
    dispatcher = Dispatcher(
        store,
        executor,
        queues=config.queue_limits(),
        # Heartbeats extend leases while a delivery is in flight; the lease only has to
        # outlast a stalled server, not the slowest handler.
        lease_for=max(timedelta(seconds=30), timeout + timedelta(seconds=5)),
        grace=parse_duration(args.grace, what="--grace"),
        gather=GATHER,
        retention=None
        if args.retention == "off"
        else parse_duration(args.retention, what="--retention"),
    )
    served = {name for limit in config.queue_limits() for name in limit.names}
    dashboard = serve_dashboard(settings, store)
    http = _Server(
        uvicorn.Config(
            create_app(store, settings.secrets, served=served, limits=limits, dashboard=dashboard),
            host=settings.host,
            port=settings.port,
            log_level=args.log_level.lower(),
            # uvicorn's lines go through the root handler, in --log-format.
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    queues = ", ".join(
        "/".join(limit.names) + f"={limit.concurrency}" for limit in config.queue_limits()
    )
    logger.info(
        "serving queues %s; HTTP on %s:%s; body limit %s",
        queues,
        settings.host,
        settings.port,
        describe(settings.body_limit),
    )
    try:
        async with anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        logger.info("%s: draining deliveries", signal.Signals(signum).name)
                        dispatcher.stop()
                        return

            group.start_soon(stop_on_signal)
            group.start_soon(http.serve)
            await dispatcher.run()
            http.should_exit = True
            group.cancel_scope.cancel()
    finally:
        await deliverer.aclose()
        await store.aclose()


def serve_dashboard(settings: Settings, store: Store) -> ASGIApp | None:
    """The dashboard for ``/ui/`` when a password is set (and say so either way)."""
    if settings.ui_password is None:
        logger.info("dashboard not served: set SLAY_Q_UI_PASSWORD to serve it at /ui/")
        return None
    logger.info(
        "dashboard at http://%s:%s/ui/ (user %s%s)",
        settings.host,
        settings.port,
        settings.ui_user,
        ", read-only" if settings.ui_read_only else "",
    )
    # Every server sharing the secret accepts the others' CSRF tokens (behind one address).
    csrf_secret = hmac.new(settings.secrets[0].encode(), b"slayq-ui-csrf", "sha256").digest()
    return ui.app(
        store,
        auth=ui.basic_auth(settings.ui_user, settings.ui_password),
        read_only=settings.ui_read_only,
        secret=csrf_secret,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per delivery is noise
    try:
        anyio.run(serve, args)
    except SlayqError as exc:
        sys.exit(f"slayq.server: {exc}")


if __name__ == "__main__":
    main()
