"""The server's settings: environment variables, checked at start with a fix for each.

* ``SLAY_Q_DATABASE_URL`` (required): ``postgresql://user:password@host:5432/db``;
  behind a transaction-mode pooler add ``?pooler=transaction``
* ``SLAY_Q_LISTEN_URL``: a URL that reaches PostgreSQL directly (or through a session-mode
  pooler), for LISTEN, when ``SLAY_Q_DATABASE_URL`` goes through a transaction pooler
* ``SLAY_Q_SECRET`` (required): the secret shared with the apps (see ``signing``)
* ``SLAY_Q_CRON_URL``: where runs with no endpoint of their own are delivered
* ``SLAY_Q_PORT`` (7700) and ``SLAY_Q_HOST`` (127.0.0.1): the health and ingest HTTP port
* ``SLAY_Q_BODY_LIMIT`` (8MiB): the largest delivery, answer or ingest request, like
  ``16MiB`` or a number of bytes; apps take the same with ``Client(body_limits=...)``
* ``SLAY_Q_UI_PASSWORD``: serve the dashboard at ``/ui/`` behind HTTP Basic auth with this
  password (without it, the dashboard is not served); ``SLAY_Q_UI_USER`` (admin) is the
  user; ``SLAY_Q_UI_READ_ONLY=1`` hides and refuses every action
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict

from slayq.errors import ConfigError, InputError
from slayq.store.postgres import parse_url
from slayq.transport.signing import secrets_from_env
from slayq.transport.wire import DEFAULT_LIMITS, parse_size

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_PORT = 7700


class Settings(msgspec.Struct, frozen=True):
    database_url: str
    secrets: list[str]
    listen_url: str | None = None
    cron_url: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    body_limit: int = DEFAULT_LIMITS.body_bytes
    ui_user: str = "admin"
    ui_password: str | None = None
    ui_read_only: bool = False


def _http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"{name}={value!r} is not an http(s) URL; set it like "
            f"{name}=http://host.docker.internal:3000/api/slay-q"
        )
    return value


def _is_database_url(url: str) -> bool:
    if "://" in url and urlsplit(url).scheme not in ("postgres", "postgresql"):
        return False
    try:
        conninfo_to_dict(parse_url(url).url)
    except psycopg.ProgrammingError:
        return False
    return True


def _listen_url(env: Mapping[str, str]) -> str | None:
    url = env.get("SLAY_Q_LISTEN_URL", "").strip()
    if not url:
        return None
    try:
        direct = _is_database_url(url) and not parse_url(url).transaction_pooler
    except InputError:
        direct = False
    if not direct:
        raise ConfigError(
            "SLAY_Q_LISTEN_URL must be a postgresql:// URL that reaches PostgreSQL directly or "
            "through a session-mode pooler (LISTEN needs a session), like "
            "SLAY_Q_LISTEN_URL=postgresql://postgres:postgres@db.internal:5432/postgres"
        )
    return url


def settings_from_env(env: Mapping[str, str]) -> Settings:
    url = env.get("SLAY_Q_DATABASE_URL", "").strip()
    if not url:
        raise ConfigError(
            "SLAY_Q_DATABASE_URL is not set: run `slayq dev --app myapp.jobs:client` for a local "
            "PostgreSQL with the server, or set it to your database, like "
            "SLAY_Q_DATABASE_URL=postgresql://postgres:postgres@localhost:5432/postgres"
        )
    try:
        valid = _is_database_url(url)
    except InputError as exc:  # a pooler= parameter with a value slayq does not know
        raise ConfigError(f"SLAY_Q_DATABASE_URL: {exc}") from None
    if not valid:
        raise ConfigError(
            "SLAY_Q_DATABASE_URL must be a postgresql:// URL (or a libpq 'host=... dbname=...' "
            "string), like SLAY_Q_DATABASE_URL=postgresql://postgres:postgres@localhost:5432/postgres"
        )
    cron_url = env.get("SLAY_Q_CRON_URL", "").strip() or None
    port_text = env.get("SLAY_Q_PORT", str(DEFAULT_PORT)).strip()
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"SLAY_Q_PORT={port_text!r} is not a port number; like SLAY_Q_PORT=7700")
    read_only_text = env.get("SLAY_Q_UI_READ_ONLY", "").strip().lower()
    if read_only_text not in ("", "0", "1", "false", "true", "no", "yes"):
        raise ConfigError(
            f"SLAY_Q_UI_READ_ONLY={read_only_text!r} is not a switch; set it to 1 or 0"
        )
    return Settings(
        ui_user=env.get("SLAY_Q_UI_USER", "").strip() or "admin",
        ui_password=env.get("SLAY_Q_UI_PASSWORD") or None,
        ui_read_only=read_only_text in ("1", "true", "yes"),
        database_url=url,
        secrets=secrets_from_env(env),
        listen_url=_listen_url(env),
        cron_url=_http_url("SLAY_Q_CRON_URL", cron_url) if cron_url else None,
        host=env.get("SLAY_Q_HOST", "127.0.0.1").strip() or "127.0.0.1",
        port=int(port_text),
        body_limit=parse_size(
            env.get("SLAY_Q_BODY_LIMIT", "").strip() or str(DEFAULT_LIMITS.body_bytes),
            what="SLAY_Q_BODY_LIMIT",
        ),
    )
