"""How the store's connections are made: straight to PostgreSQL, or through a pooler.

A pooler in transaction mode (PgBouncer's ``pool_mode = transaction``, Supabase's pooler
on port 6543) hands each transaction to whichever server connection is free. Nothing a
session keeps survives from one transaction to the next there, and it leaks to whichever
client runs on that server connection next:

- psycopg prepares a statement server-side after its fifth execution, so the sixth can
  meet a server connection that never saw it ("prepared statement does not exist");
- ``set_config(..., false)`` (the ``search_path`` to the store's schema) is lost, and
  changes the next client's session instead;
- LISTEN registers a session that the pooler gives to others (see ``PostgresStore.listen``).

``?pooler=transaction`` in the database URL says so. The store then turns prepared
statements off and begins every transaction with ``LOCAL_SETTINGS``, which end with it.
The parameter is slayq's, not libpq's (which refuses parameters it does not know), so
``parse_url`` takes it out of the URL before anything connects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from slayq.errors import InputError

# How to get a database, for every place that finds none (worker, server, CLI).
NO_DATABASE = (
    "no database: run `slayq dev --app myapp.jobs:client` for a local PostgreSQL (it sets "
    "SLAY_Q_DATABASE_URL for what it starts), or set "
    "SLAY_Q_DATABASE_URL=postgresql://user:password@host:5432/db"
)

POOLER = "pooler"
TRANSACTION = "transaction"
_KEYWORD = re.compile(r"(^|\s)pooler\s*=")

# Direct connections set these once per session. ``timezone`` is also kept behind a
# pooler: PgBouncer tracks it per client and sets it on each server connection it hands
# out (its docs list client_encoding, datestyle, timezone, standard_conforming_strings).
SESSION_SETTINGS = (
    "select set_config('search_path', %s, false), set_config('timezone', 'UTC', false),"
    " set_config('jit', 'off', false)"
)
POOLED_SESSION_SETTINGS = "select set_config('timezone', 'UTC', false)"
# Behind a transaction pooler, the first statement of every transaction: the settings
# last until its end, so they neither go missing nor reach another client's session.
LOCAL_SETTINGS = (
    "select set_config('search_path', %s, true), set_config('timezone', 'UTC', true),"
    " set_config('jit', 'off', true)"
)


@dataclass(frozen=True)
class Target:
    """Where to connect (``url``, for libpq) and whether a transaction pooler is between."""

    url: str
    transaction_pooler: bool

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for psycopg's ``connect``: behind a transaction pooler, no
        statement is ever prepared server-side."""
        return {"prepare_threshold": None} if self.transaction_pooler else {}


def parse_url(url: str) -> Target:
    """Split slayq's ``pooler`` parameter off a database URL.

    >>> parse_url("postgresql://app@pooler:6543/db?pooler=transaction&sslmode=require")
    Target(url='postgresql://app@pooler:6543/db?sslmode=require', transaction_pooler=True)
    """
    if "://" not in url:
        if _KEYWORD.search(url):
            raise InputError(
                "pooler= is a parameter of postgresql:// URLs; write the database as a URL, "
                "like postgresql://user:password@host:6543/db?pooler=transaction"
            )
        return Target(url, transaction_pooler=False)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    modes = [value for key, value in query if key == POOLER]
    if not modes:
        return Target(url, transaction_pooler=False)
    if modes != [TRANSACTION]:
        raise InputError(
            f"pooler={'&pooler='.join(modes)} in the database URL: the only value is "
            "pooler=transaction (PgBouncer or Supabase's pooler in transaction mode); "
            "leave it out for a direct connection or a session-mode pooler"
        )
    rest = urlencode([(key, value) for key, value in query if key != POOLER])
    return Target(urlunsplit(parts._replace(query=rest)), transaction_pooler=True)
