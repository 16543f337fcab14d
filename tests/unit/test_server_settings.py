"""The server's environment: each mistake is named with a correct example."""

from __future__ import annotations

import pytest

from slayq.__main__ import main as slayq_main
from slayq.errors import ConfigError
from slayq.server.settings import settings_from_env

SECRET = "s3cret-0123456789abcdef"
URL = "postgresql://postgres@127.0.0.1:5432/app"


def test_a_complete_environment_parses() -> None:
    settings = settings_from_env(
        {
            "SLAY_Q_DATABASE_URL": URL,
            "SLAY_Q_SECRET": SECRET,
            "SLAY_Q_CRON_URL": "http://host.docker.internal:3000/api/slay-q",
            "SLAY_Q_PORT": "8000",
        }
    )
    assert (settings.database_url, settings.secrets, settings.port) == (URL, [SECRET], 8000)
    assert settings.cron_url == "http://host.docker.internal:3000/api/slay-q"
    libpq = settings_from_env(
        {"SLAY_Q_DATABASE_URL": "host=db dbname=app", "SLAY_Q_SECRET": SECRET}
    )
    assert (libpq.host, libpq.port, libpq.cron_url) == ("127.0.0.1", 7700, None)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SLAY_Q_SECRET": SECRET}, "SLAY_Q_DATABASE_URL is not set"),
        ({"SLAY_Q_DATABASE_URL": "mysql://x/y", "SLAY_Q_SECRET": SECRET}, "postgresql:// URL"),
        ({"SLAY_Q_DATABASE_URL": URL}, "set SLAY_Q_SECRET"),
        ({"SLAY_Q_DATABASE_URL": URL, "SLAY_Q_SECRET": "short"}, "too short"),
        (
            {"SLAY_Q_DATABASE_URL": URL, "SLAY_Q_SECRET": SECRET, "SLAY_Q_PORT": "http"},
            "SLAY_Q_PORT='http' is not a port number",
        ),
        (
            {
                "SLAY_Q_DATABASE_URL": URL,
                "SLAY_Q_SECRET": SECRET,
                "SLAY_Q_CRON_URL": "localhost:3000",
            },
            "SLAY_Q_CRON_URL='localhost:3000' is not an http(s) URL",
        ),
    ],
)
def test_each_mistake_is_named(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env(env)
    assert says in str(info.value)
    assert "like" in str(info.value) or "Make one" in str(info.value)


def test_migrate_without_a_database_url_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SLAY_Q_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as info:
        slayq_main(["migrate"])
    assert "SLAY_Q_DATABASE_URL is not set" in str(info.value.code)
