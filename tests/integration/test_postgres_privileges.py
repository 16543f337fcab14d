"""Least privilege: PUBLIC gets nothing; an app role with plain DML rights can work."""

from __future__ import annotations

import secrets
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from slayq.store.postgres import PostgresStore
from tests.contract.helpers import new_run, starting

pytestmark = pytest.mark.anyio


async def test_public_has_no_access_and_no_security_definer_functions(pg_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "select has_schema_privilege('public', 'slayq', 'USAGE'),"
            " bool_or(has_table_privilege('public', c.oid, 'SELECT'))"
            " from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = 'slayq' and c.relkind = 'r'"
        )
        assert await cur.fetchone() == (False, False)
        cur = await conn.execute(
            "select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = 'slayq' and p.prosecdef"
            " and not coalesce(array_to_string(p.proconfig, ',') like '%search_path%', false)"
        )
        assert await cur.fetchone() == (0,)


async def test_an_app_role_without_ddl_rights_opens_a_migrated_store(pg_url: str) -> None:
    role = f"slayq_app_{secrets.token_hex(3)}"
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        ident = sql.Identifier(role)
        for statement in (
            "create role {} login",
            "grant usage on schema slayq to {}",
            "grant select, insert, update, delete on all tables in schema slayq to {}",
            "grant usage, select on all sequences in schema slayq to {}",
            "grant execute on all functions in schema slayq to {}",
        ):
            await admin.execute(sql.SQL(statement).format(ident))
        try:
            store = PostgresStore(make_conninfo(pg_url, user=role))
            await store.open()
            try:
                (run_id,) = await store.send_events([starting(new_run())])
                claims = await store.claim(
                    queues=None, limit=1, lease_for=timedelta(seconds=30), owner="app"
                )
                assert [c.lease.run_id for c in claims] == [run_id]
            finally:
                await store.aclose()
        finally:
            await admin.execute(sql.SQL("drop owned by {}").format(ident))
            await admin.execute(sql.SQL("drop role {}").format(ident))
