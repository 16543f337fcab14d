"""Cron expressions, with Slay Q's ``TZ=Area/City`` prefix for a local timezone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from slayq.errors import FunctionDefinitionError

# Any expression that ticks at all ticks again within a few years (cron has no year
# field), so one tick after this instant tells a real schedule from "31 February".
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)
# Ticks skipped in a row as second occurrences of a wall time: at most an hour's worth
# of minutes per clock change; the bound only stops a runaway loop.
_MAX_SKIPS = 24 * 60


class CronSpec:
    """A parsed schedule: ``"0 3 * * *"`` (UTC) or ``"TZ=Asia/Singapore 0 3 * * *"``.

    Ticks are computed in the schedule's own timezone, so "0 3 * * *" in Europe/Berlin
    fires at 03:00 local time on both sides of a daylight-saving change. A schedule names
    wall times: one that a change skips fires at the next valid time; one that happens
    twice (clocks fall back) fires at its first occurrence only.

    Raises ``FunctionDefinitionError`` naming the expression if it is not valid, names an
    unknown zone, or never ticks (``"0 0 31 2 *"``).
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
        try:
            self.next_after(_REFERENCE)
        except FunctionDefinitionError:
            raise FunctionDefinitionError(
                f"cron {text!r}: {expression!r} never ticks (no such day, like 31 February)"
            ) from None

    def next_after(self, when: datetime) -> datetime:
        """The first tick strictly after ``when``, as an aware UTC datetime.

        Stateless: the same answer whether ``when`` is the previous tick or a late "now",
        so a tick fired late never fires a repeated wall time a second time. Raises
        ``FunctionDefinitionError`` naming the expression if no tick follows ``when``.
        """
        try:
            iterator = croniter(self.expression, when.astimezone(self.zone))
            for _ in range(_MAX_SKIPS):
                tick = iterator.get_next(datetime).astimezone(UTC)
                if not _second_occurrence(tick.astimezone(self.zone)):
                    return tick
        except (CroniterError, OverflowError):
            pass
        raise FunctionDefinitionError(f"cron {self.text!r}: no tick follows {when.isoformat()}")

    def __repr__(self) -> str:
        return f"CronSpec({self.text!r})"


def _second_occurrence(local: datetime) -> bool:
    """A wall time that clocks falling back show again (``fold=1``, another offset)."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
