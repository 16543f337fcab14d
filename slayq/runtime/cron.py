"""Cron expressions, with Slay Q's ``TZ=Area/City`` prefix for a local timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from slayq.errors import FunctionDefinitionError


class CronSpec:
    """A parsed schedule: ``"0 3 * * *"`` (UTC) or ``"TZ=Asia/Singapore 0 3 * * *"``.

    Ticks are computed in the schedule's own timezone, so "0 3 * * *" in Europe/Berlin
    fires at 03:00 local time on both sides of a daylight-saving change; a local time
    that a change skips fires at the next valid time, one repeated fires once.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        expression = text.strip()
        zone_name = "UTC"
        if expression.startswith("TZ="):
            zone_name, _, expression = expression[3:].partition(" ")
            expression = expression.strip()
        try:
            self.zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise FunctionDefinitionError(
                f"cron {text!r}: unknown timezone {zone_name!r} (use an IANA name like "
                "'TZ=Asia/Singapore 0 3 * * *')"
            ) from None
        if not expression or not croniter.is_valid(expression):
            raise FunctionDefinitionError(
                f"cron {text!r}: {expression!r} is not a valid cron expression "
                "(five fields: minute hour day-of-month month day-of-week, like '0 3 * * *')"
            )
        self.expression = expression

    def next_after(self, when: datetime) -> datetime:
        """The first tick strictly after ``when``, as an aware UTC datetime."""
        local = when.astimezone(self.zone)
        iterator = croniter(self.expression, local)
        while True:
            tick: datetime = iterator.get_next(datetime)
            # When clocks fall back, croniter yields a repeated wall time twice (once per
            # UTC offset); a schedule names wall times, so it fires once.
            if _wall_minute(tick) != _wall_minute(local):
                return tick.astimezone(UTC)

    def __repr__(self) -> str:
        return f"CronSpec({self.text!r})"


def _wall_minute(moment: datetime) -> tuple[int, int, int, int, int]:
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute)
