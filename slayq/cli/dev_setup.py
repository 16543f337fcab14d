"""What ``slayq dev`` keeps in its data folder besides the database: a queue config for an
app that brings none, and the secret the server and the app sign deliveries with."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec

from slayq.worker.config import QueueConfig, SlayConfig, load_config

if TYPE_CHECKING:
    from slayq.client import Client

DEFAULT_CONCURRENCY = 10


def endpoint_origin(endpoint: str) -> str:
    """``http://127.0.0.1:3000/`` of ``http://127.0.0.1:3000/api/slay-q``."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}/"


def generated_config(client: Client) -> SlayConfig:
    """One queue per queue the client's functions use, and the client's endpoint allowed."""
    queues = sorted({fn.queue for fn in client.functions} | {"general"})
    return SlayConfig(
        queues={name: QueueConfig(concurrency=DEFAULT_CONCURRENCY) for name in queues},
        allowed_endpoints=[endpoint_origin(client.endpoint)] if client.endpoint else [],
    )


def config_path(given: str | None, client: Client, data_dir: Path) -> Path:
    """The config to run with: ``--config``, else ``./slay-config.json``, else one written
    to the data folder from the client's functions (rewritten each start)."""
    if given is not None:
        load_config(given)  # a bad file fails here, naming what is wrong
        return Path(given)
    local = Path("slay-config.json")
    if local.exists():
        load_config(local)
        return local
    written = data_dir / "slay-config.json"
    written.write_bytes(msgspec.json.format(msgspec.json.encode(generated_config(client))))
    return written


def secret(data_dir: Path) -> str:
    """The signing secret of this data folder: made once, then kept, so an app started
    with it keeps working across restarts."""
    path = data_dir / "secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()
