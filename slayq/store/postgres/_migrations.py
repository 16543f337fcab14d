"""Versioned SQL migrations: ``migrations/NNNN_name.sql``, applied in order, each once.

Every open of a store runs them, so a fresh database needs no separate step; ``migrate``
does the same for deployments that keep schema changes apart from application start.
They run in one transaction under an advisory lock: several processes opening at once
apply each migration once, and a failed migration leaves nothing half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from slayq.errors import InputError
from slayq.store.postgres._connect import parse_url
from slayq.store.postgres._errors import translated
from slayq.store.postgres.sql.ticking import TICK_DDL, TICK_NAME

if TYPE_CHECKING:
    from psycopg import AsyncConnection

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LOCK_NAMESPACE = 0x736C_0004

_ROUTINE_INSTALLED = """
select exists (
    select 1 from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
    where n.nspname = %s and p.proname = %s
)
"""

_LEDGER = """
create table if not exists migrations (
    version integer primary key,
    name text not null,
    applied_at timestamptz not null default now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str


def load_migrations() -> list[Migration]:
    """The migration files shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("slayq.store.postgres").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two slayq migrations share a version: {versions}")
    return found


def check_schema(schema: str) -> str:
    """Schema names are plain lowercase identifiers, so they need no quoting anywhere."""
    if not _SCHEMA.match(schema):
        raise InputError(
            f"schema {schema!r}: use a lowercase identifier (letters, digits, underscores)"
        )
    return schema


async def _applied(conn: AsyncConnection[Any], schema: str) -> set[int] | None:
    """The versions the ledger records, read only; None without a ledger this role can read."""
    cursor = await conn.execute(
        "select to_regclass(format('%%I.migrations', %s::text)) is not null", [schema]
    )
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return None
    query = sql.SQL("select version from {}.migrations").format(sql.Identifier(schema))
    try:
        cursor = await conn.execute(query)
    except psycopg.errors.InsufficientPrivilege:
        return None
    return {version for (version,) in await cursor.fetchall()}


async def _routines_installed(conn: AsyncConnection[Any], schema: str) -> bool:
    cursor = await conn.execute(_ROUTINE_INSTALLED, [schema, TICK_NAME])
    row = await cursor.fetchone()
    return row is not None and bool(row[0])


async def _up_to_date(conn: AsyncConnection[Any], schema: str) -> bool:
    """Read-only check first, so a role without DDL rights can open an up-to-date store."""
    done = await _applied(conn, schema)
    if done is None or not all(m.version in done for m in load_migrations()):
        return False
    return await _routines_installed(conn, schema)


async def apply_migrations(conn: AsyncConnection[Any], schema: str) -> list[str]:
    """Apply the missing migrations on ``conn`` (autocommit) and install this version's
    tick function if missing; returns the names of what it applied and installed."""
    ident = sql.Identifier(check_schema(schema))
    if await _up_to_date(conn, schema):
        return []
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute(
            "select pg_advisory_xact_lock(%s, hashtext(%s))", [_LOCK_NAMESPACE, schema]
        )
        await conn.execute(sql.SQL("create schema if not exists {}").format(ident))
        await conn.execute("select set_config('search_path', %s, true)", [schema])
        await conn.execute(_LEDGER)
        cursor = await conn.execute("select version from migrations")
        done = {row[0] for row in await cursor.fetchall()}
        for migration in load_migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.text)
            await conn.execute(
                "insert into migrations (version, name) values (%s, %s)",
                [migration.version, migration.name],
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
        # The routines made from the statements of this version (see ``sql.ticking``):
        # named by a hash of their text, installed once, never replaced, so processes of
        # an older version keep the ones they call.
        if not await _routines_installed(conn, schema):
            await conn.execute(TICK_DDL)
            applied.append(TICK_NAME)
        # Least privilege: only the owner (the role that migrates) may touch slayq's data.
        for statement in (
            "revoke all on schema {} from public",
            "revoke all on all tables in schema {} from public",
            "revoke all on all sequences in schema {} from public",
            "revoke all on all functions in schema {} from public",
        ):
            await conn.execute(sql.SQL(statement).format(ident))
    return applied


async def migrate(url: str, *, schema: str = "slayq") -> list[str]:
    """Bring the database at ``url`` to the current schema; returns the migrations applied."""
    target = parse_url(url)
    with translated("migrate"):
        async with await psycopg.AsyncConnection.connect(
            target.url, autocommit=True, **target.connect_options()
        ) as conn:
            return await apply_migrations(conn, schema)


async def pending_migrations(url: str, *, schema: str = "slayq") -> list[str]:
    """The migrations the database at ``url`` still lacks (all of them without a ledger
    this role can read), and the tick function if it lacks this version's; reads only,
    so a health probe can call it."""
    check_schema(schema)
    target = parse_url(url)
    with translated("check migrations"):
        async with await psycopg.AsyncConnection.connect(
            target.url, autocommit=True, **target.connect_options()
        ) as conn:
            done = await _applied(conn, schema) or set()
            routines = [] if await _routines_installed(conn, schema) else [TICK_NAME]
    missing = [f"{m.version:04d}_{m.name}" for m in load_migrations() if m.version not in done]
    return missing + routines
