"""The server's environment: each mistake is named with a correct example."""

from __future__ import annotations

from pathlib import Path

import pytest

from slayq.__main__ import main as slayq_main
from slayq.errors import ConfigError
from slayq.server.__main__ import main as server_main
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
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SLAY_Q_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as info:
        slayq_main(["migrate"])
    assert info.value.code == 1
    assert "set SLAY_Q_DATABASE_URL=postgresql://" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "size"), [("16MiB", 16 * 1024 * 1024), ("20MB", 20_000_000), ("4194304", 4194304)]
)
def test_the_body_limit_is_read_with_units(text: str, size: int) -> None:
    env = {"SLAY_Q_DATABASE_URL": URL, "SLAY_Q_SECRET": SECRET, "SLAY_Q_BODY_LIMIT": text}
    assert settings_from_env(env).body_limit == size
    assert settings_from_env({**env, "SLAY_Q_BODY_LIMIT": ""}).body_limit == 8 * 1024 * 1024


@pytest.mark.parametrize("text", ["16 parsecs", "0", "-1MiB"])
def test_a_body_limit_that_is_not_a_size_is_named(text: str) -> None:
    env = {"SLAY_Q_DATABASE_URL": URL, "SLAY_Q_SECRET": SECRET, "SLAY_Q_BODY_LIMIT": text}
    with pytest.raises(ConfigError, match=f"SLAY_Q_BODY_LIMIT: {text!r} is not a size.*16MiB"):
        settings_from_env(env)


def test_a_cron_url_outside_the_allowed_endpoints_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "slay-config.json"
    config.write_text(
        '{"queues": {"general": {"concurrency": 1}}, "allowed_endpoints": ["http://app:3000/"]}'
    )
    monkeypatch.setenv("SLAY_Q_DATABASE_URL", URL)
    monkeypatch.setenv("SLAY_Q_SECRET", SECRET)
    monkeypatch.setenv("SLAY_Q_CRON_URL", "http://elsewhere:3000/api/slay-q")
    with pytest.raises(SystemExit) as exited:
        server_main([str(config)])
    assert "SLAY_Q_CRON_URL: endpoint 'http://elsewhere:3000/api/slay-q' is not allowed" in str(
        exited.value
    )
