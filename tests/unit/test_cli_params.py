"""The CLI's option parsing and formatting, without a database (the commands themselves
are tested as a subprocess in tests/integration/test_cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click
import msgspec
import pytest
from click.testing import CliRunner

from slayq.cli.output import span, table
from slayq.cli.params import data_filter, time_bound


@click.command()
@click.option("--data", multiple=True, callback=data_filter)
@click.option("--since", callback=time_bound)
def echo(data: dict[str, Any] | None, since: timedelta | datetime | None) -> None:
    click.echo(msgspec.json.encode({"data": data, "since": repr(since)}).decode())


def parsed(*args: str) -> Any:
    result = CliRunner().invoke(echo, list(args))
    assert result.exit_code == 0, result.output
    return msgspec.json.decode(result.output)


def test_data_pairs_merge_and_dotted_keys_nest() -> None:
    got = parsed("--data", 'customer.tier="gold"', "--data", "customer.id=5", "--data", "x=[1]")
    assert got["data"] == {"customer": {"tier": "gold", "id": 5}, "x": [1]}
    assert parsed()["data"] is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("text=bob", "'text=bob': 'bob' is not JSON; quote a string as JSON: text='\"bob\"'"),
        ("text", "'text' is not KEY=JSON"),
        ("a..b=1", "'a..b=1' is not KEY=JSON"),
    ],
)
def test_a_bad_data_pair_is_a_usage_error_naming_it(value: str, says: str) -> None:
    result = CliRunner().invoke(echo, ["--data", value])
    assert result.exit_code == 2
    assert says in result.output and "'--data'" in result.output


def test_since_is_a_duration_back_or_an_aware_time() -> None:
    assert parsed("--since", "90m")["since"] == repr(timedelta(minutes=90))
    at = datetime(2025, 3, 1, tzinfo=UTC)
    assert parsed("--since", "2025-03-01T00:00:00Z")["since"] == repr(at)
    naive = CliRunner().invoke(echo, ["--since", "2025-03-01T00:00:00"])
    assert naive.exit_code == 2 and "'2025-03-01T00:00:00' is neither a duration" in naive.output


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.12, "120ms"),
        (4.25, "4.2s"),
        (300, "5m"),
        (312, "5m12s"),
        (7500, "2h05m"),
        (86400, "1d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
    ],
)
def test_spans_are_short(seconds: float, shown: str) -> None:
    assert span(timedelta(seconds=seconds)) == shown


def test_tables_align_and_keep_each_row_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    table(["ID", "ERROR"], [["a", "boom\nTraceback"], ["bbb", "x" * 100]], empty="none")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ID   ERROR"
    assert lines[1] == "a    boom Traceback"
    assert lines[2].startswith("bbb  xxx") and lines[2].endswith("…") and len(lines[2]) == 65
    table(["ID"], [], empty="no run matches")
    assert capsys.readouterr().out == "no run matches\n"
