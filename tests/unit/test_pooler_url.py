"""``?pooler=transaction`` in a database URL: taken off before libpq sees it, bad values
named, and the server's ``SLAY_Q_LISTEN_URL`` checked (the behaviour behind a real
PgBouncer is in tests/integration/test_pgbouncer.py)."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from slayq.errors import ConfigError, InputError
from slayq.server.settings import settings_from_env
from slayq.store.postgres import PostgresStore, parse_url

SECRET = "s3cret-0123456789abcdef"
POOLED = "postgresql://app:pw@pooler.example:6543/db?sslmode=require&pooler=transaction"
DIRECT = "postgresql://app:pw@db.example:5432/db"


def test_the_parameter_is_taken_off_and_the_rest_kept() -> None:
    target = parse_url(POOLED)
    assert target.transaction_pooler
    assert target.url == "postgresql://app:pw@pooler.example:6543/db?sslmode=require"
    assert conninfo_to_dict(target.url)["sslmode"] == "require"  # libpq accepts what is left
    assert target.connect_options() == {"prepare_threshold": None}


@pytest.mark.parametrize("url", [DIRECT, "host=db dbname=app", "postgresql:///app?sslmode=disable"])
def test_urls_without_it_pass_unchanged(url: str) -> None:
    target = parse_url(url)
    assert (target.url, target.transaction_pooler, target.connect_options()) == (url, False, {})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (DIRECT + "?pooler=session", "pooler=session in the database URL: the only value is"),
        (DIRECT + "?pooler=", "pooler= in the database URL: the only value is"),
        (
            DIRECT + "?pooler=transaction&pooler=transaction",
            "pooler=transaction&pooler=transaction in the database URL",
        ),
        ("host=db pooler=transaction", "pooler= is a parameter of postgresql:// URLs"),
    ],
)
def test_a_bad_pooler_parameter_is_named(url: str, says: str) -> None:
    with pytest.raises(InputError, match=says):
        parse_url(url)
    with pytest.raises(InputError, match=says):
        PostgresStore(url)


def test_a_listen_url_through_the_pooler_is_refused() -> None:
    with pytest.raises(InputError, match="listen_url has pooler=transaction: LISTEN needs a"):
        PostgresStore(POOLED, listen_url=POOLED)


def test_the_server_reads_a_pooled_database_url_and_a_listen_url() -> None:
    settings = settings_from_env(
        {"SLAY_Q_DATABASE_URL": POOLED, "SLAY_Q_LISTEN_URL": DIRECT, "SLAY_Q_SECRET": SECRET}
    )
    assert (settings.database_url, settings.listen_url) == (POOLED, DIRECT)
    assert (
        settings_from_env({"SLAY_Q_DATABASE_URL": DIRECT, "SLAY_Q_SECRET": SECRET}).listen_url
        is None
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SLAY_Q_DATABASE_URL": DIRECT + "?pooler=yes"}, "SLAY_Q_DATABASE_URL: pooler=yes"),
        ({"SLAY_Q_DATABASE_URL": POOLED, "SLAY_Q_LISTEN_URL": POOLED}, "SLAY_Q_LISTEN_URL must"),
        (
            {"SLAY_Q_DATABASE_URL": POOLED, "SLAY_Q_LISTEN_URL": "http://x"},
            "SLAY_Q_LISTEN_URL must",
        ),
    ],
)
def test_the_server_names_a_bad_pooler_setting(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        settings_from_env(env | {"SLAY_Q_SECRET": SECRET})


def test_the_worker_names_its_database_without_the_parameter_or_the_password() -> None:
    from slayq.client import Client
    from slayq.worker.__main__ import _database

    assert _database(Client([], store=PostgresStore(POOLED))) == "pooler.example:6543/db"
