"""Databases for tests: each test gets a fresh one, cloned from a migrated template.

Cloning (``CREATE DATABASE ... TEMPLATE``) takes milliseconds where migrating takes
much longer. The template is named after a fingerprint of the migration files, so
checkouts with different migrations (branches, worktrees) test side by side on one
server, each against its own template; an advisory lock on the admin database keeps
concurrent test processes from building or cloning at the same time (cloning fails
while anyone is connected to the template).
"""

from __future__ import annotations

import hashlib
import os
import secrets

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from slayq.store.postgres import migrate
from slayq.store.postgres._migrations import load_migrations
from slayq.store.postgres.sql.ticking import TICK_DDL

_LOCK = 0x736C_7E57
_ready: set[tuple[str, str]] = set()  # (server, template) this process already saw in place


def admin_url() -> str:
    return os.environ.get("SLAY_Q_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _url(dbname: str, admin: str | None = None) -> str:
    return make_conninfo(admin or admin_url(), dbname=dbname)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for migration in load_migrations():
        digest.update(f"{migration.version}:{migration.name}:{migration.text}".encode())
    digest.update(TICK_DDL.encode())  # installed with them (see _migrations)
    return digest.hexdigest()[:16]


async def _ensure_template(conn: psycopg.AsyncConnection[tuple[object, ...]], admin: str) -> str:
    """The name of the template for the current migrations, built if missing."""
    template = f"slayq_template_{_fingerprint()}"
    if (admin, template) in _ready:
        return template
    cursor = await conn.execute(
        "select shobj_description(oid, 'pg_database') from pg_database where datname = %s",
        [template],
    )
    row = await cursor.fetchone()
    if row is None or row[0] != "migrated":
        # Missing, or left half-built by a process that died while migrating it.
        name = sql.Identifier(template)
        await conn.execute(sql.SQL("drop database if exists {} with (force)").format(name))
        await conn.execute(sql.SQL("create database {}").format(name))
        await migrate(_url(template, admin))
        await conn.execute(sql.SQL("comment on database {} is 'migrated'").format(name))
    _ready.add((admin, template))
    return template


async def fresh_database(admin: str | None = None) -> str:
    """The connection string of a new, migrated database; drop it with ``drop_database``.

    On the test PostgreSQL (``SLAY_Q_TEST_DATABASE_URL``), or on the server of ``admin``."""
    admin = admin or admin_url()
    name = f"slayq_t_{secrets.token_hex(6)}"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute("select pg_advisory_lock(%s)", [_LOCK])
        try:
            template = await _ensure_template(conn, admin)
            await conn.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        finally:
            await conn.execute("select pg_advisory_unlock(%s)", [_LOCK])
    return _url(name, admin)


async def drop_database(url: str, admin: str | None = None) -> None:
    name = conninfo_to_dict(url)["dbname"]
    async with await psycopg.AsyncConnection.connect(admin or admin_url(), autocommit=True) as conn:
        await conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(str(name)))
        )
