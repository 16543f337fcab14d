"""Cron expressions: refused at definition when they never tick, and wall times in a
daylight-saving zone fire once, whether ticks are computed on time or late."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import slayq
from slayq.runtime.cron import CronSpec

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


async def noop(ctx: slayq.Context[slayq.EmptyEvent]) -> None:
    pass


def walk(spec: CronSpec, start: datetime, end: datetime) -> list[datetime]:
    """Every tick from ``start`` to ``end``, each computed from the previous one."""
    ticks: list[datetime] = []
    at = spec.next_after(start)
    while at <= end:
        ticks.append(at)
        at = spec.next_after(at)
    return ticks


def wall(ticks: list[datetime], zone: ZoneInfo) -> list[tuple[int, int, int]]:
    return [(t.day, t.hour, t.minute) for t in (tick.astimezone(zone) for tick in ticks)]


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "TZ=Europe/Berlin 0 0 31 4 *"])
def test_an_expression_that_never_ticks_is_refused_at_definition(cron: str) -> None:
    with pytest.raises(slayq.FunctionDefinitionError, match="never") as raised:
        slayq.function(event="x", cron=cron)(noop)
    assert repr(cron) in str(raised.value)


def test_a_rare_but_real_tick_is_accepted() -> None:
    spec = CronSpec("0 0 29 2 *")
    assert spec.next_after(datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_no_tick_left_before_year_9999_is_a_slayq_error_naming_the_expression() -> None:
    spec = CronSpec("0 3 * * *")
    with pytest.raises(slayq.FunctionDefinitionError, match="'0 3 \\* \\* \\*'"):
        spec.next_after(datetime(9999, 12, 31, 23, 59, tzinfo=UTC))


# New York falls back on 2025-11-02: 01:00-01:59 happens twice (EDT, then EST).
NY_BEFORE = datetime(2025, 11, 2, 0, 0, tzinfo=NEW_YORK)  # 04:00 UTC
NY_AFTER = datetime(2025, 11, 2, 3, 30, tzinfo=NEW_YORK)  # 08:30 UTC


def test_every_half_hour_fires_each_wall_time_once_when_clocks_fall_back() -> None:
    ticks = walk(CronSpec("TZ=America/New_York */30 * * * *"), NY_BEFORE, NY_AFTER)
    assert wall(ticks, NEW_YORK) == [
        (2, 0, 30),
        (2, 1, 0),
        (2, 1, 30),
        (2, 2, 0),
        (2, 2, 30),
        (2, 3, 0),
        (2, 3, 30),
    ]
    # The repeated wall times fire at their first occurrence (EDT, UTC-4).
    assert ticks[1] == datetime(2025, 11, 2, 5, 0, tzinfo=UTC)
    assert ticks[2] == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)


def test_a_daily_time_in_the_repeated_hour_fires_once() -> None:
    ticks = walk(
        CronSpec("TZ=America/New_York 30 1 * * *"),
        datetime(2025, 11, 1, 12, tzinfo=UTC),
        datetime(2025, 11, 4, 12, tzinfo=UTC),
    )
    assert wall(ticks, NEW_YORK) == [(2, 1, 30), (3, 1, 30), (4, 1, 30)]
    assert ticks[0] == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)


def test_berlin_every_half_hour_fires_two_and_half_past_two_once() -> None:
    ticks = walk(
        CronSpec("TZ=Europe/Berlin */30 * * * *"),
        datetime(2025, 10, 26, 1, 0, tzinfo=BERLIN),
        datetime(2025, 10, 26, 3, 30, tzinfo=BERLIN),
    )
    assert wall(ticks, BERLIN) == [(26, 1, 30), (26, 2, 0), (26, 2, 30), (26, 3, 0), (26, 3, 30)]


@pytest.mark.parametrize(
    ("cron", "late", "expected"),
    [
        # 01:10 EST, the second pass through the repeated hour: 01:30 fired at 01:30 EDT.
        ("TZ=America/New_York 30 1 * * *", datetime(2025, 11, 2, 6, 10, tzinfo=UTC), (3, 1, 30)),
        ("TZ=America/New_York */30 * * * *", datetime(2025, 11, 2, 6, 10, tzinfo=UTC), (2, 2, 0)),
        # 02:05 CET in Berlin, after 02:00 and 02:30 CEST already fired.
        ("TZ=Europe/Berlin */30 * * * *", datetime(2025, 10, 26, 1, 5, tzinfo=UTC), (26, 3, 0)),
        ("TZ=Europe/Berlin 30 2 * * *", datetime(2025, 10, 26, 1, 5, tzinfo=UTC), (27, 2, 30)),
    ],
)
def test_a_late_tick_from_the_second_pass_does_not_fire_a_wall_time_again(
    cron: str, late: datetime, expected: tuple[int, int, int]
) -> None:
    spec = CronSpec(cron)
    assert wall([spec.next_after(late)], spec.zone) == [expected]


def test_a_tick_from_the_first_pass_still_fires_the_rest_of_the_first_pass() -> None:
    spec = CronSpec("TZ=America/New_York 30 1 * * *")
    first_pass = datetime(2025, 11, 2, 5, 10, tzinfo=UTC)  # 01:10 EDT
    assert spec.next_after(first_pass) == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)


def test_spring_forward_fires_a_skipped_time_at_the_next_valid_time() -> None:
    spec = CronSpec("TZ=America/New_York 30 2 * * *")  # 02:30 does not exist on 2025-03-09
    ticks = walk(spec, datetime(2025, 3, 8, 12, tzinfo=UTC), datetime(2025, 3, 10, 12, tzinfo=UTC))
    assert wall(ticks, NEW_YORK) == [(9, 3, 0), (10, 2, 30)]
    assert ticks[1] - ticks[0] == timedelta(hours=23, minutes=30)
