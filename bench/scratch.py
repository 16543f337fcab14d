"""Scratch databases for the benchmarks, on the server of ``SLAY_Q_TEST_DATABASE_URL``."""

from __future__ import annotations

import os
import secrets

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ADMIN_URL = os.environ.get("SLAY_Q_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def fresh_database(prefix: str = "slayq_bench") -> str:
    """A new empty database; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return make_conninfo(ADMIN_URL, dbname=name)


def drop_database(url: str) -> None:
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
