"""Cron schedules are owned by the app that registers them (every test on both stores).

An app registers its schedules at start with the events it runs: it never removes another
app's schedule, and its own follow its code from one start to the next.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

import pytest

from slayq.errors import FunctionDefinitionError, InputError
from slayq.model import Completed, Schedule, Transition
from slayq.runtime.clock import VirtualClock
from slayq.store.protocol import Store
from tests.contract.helpers import claim_all, new_run

pytestmark = pytest.mark.anyio

START = datetime.fromisoformat("2025-03-01T12:00:00+00:00")  # the clock fixture's start


def cron(event: str, expression: str = "0 * * * *") -> Schedule:
    return Schedule(event=event, cron=expression, template=new_run(event=event))


async def register(
    store: Store, app: str, schedules: list[Schedule], events: Collection[str] = ()
) -> None:
    """An app's start: its schedules, and every event it runs (those with a cron too)."""
    runs = set(events) | {s.event for s in schedules}
    await store.set_schedules(schedules, app=app, events=sorted(runs))


async def fired_at(store: Store, clock: VirtualClock, when: datetime) -> list[str]:
    """Move the clock to ``when``, fire what is due: the events of the runs started."""
    clock.set(when)
    started = await store.fire_schedules()
    events = sorted([(await store.get_run(run_id)).event for run_id in started])
    for claim in await claim_all(store):  # out of the way of the next call
        assert claim.event in events
        await store.commit(claim.lease, Transition(steps=[], outcome=Completed()))
    return events


async def test_two_apps_schedules_coexist(store: Store, clock: VirtualClock) -> None:
    await register(store, "worker", [cron("worker/tick")])
    await register(store, "http://app.test/api/slay-q", [cron("app/tick")])
    assert await fired_at(store, clock, START + timedelta(hours=1)) == ["app/tick", "worker/tick"]
    # Restarts, in either order, keep the other app's schedule.
    await register(store, "worker", [cron("worker/tick")])
    await register(store, "http://app.test/api/slay-q", [cron("app/tick")])
    assert await fired_at(store, clock, START + timedelta(hours=2)) == ["app/tick", "worker/tick"]


async def test_an_app_dropping_a_cron_removes_only_its_own(
    store: Store, clock: VirtualClock
) -> None:
    await register(store, "a", [cron("a/tick"), cron("a/hourly")])
    await register(store, "b", [cron("b/tick")])
    # Restarted: a/hourly still runs in app a, without its cron.
    await register(store, "a", [cron("a/tick")], events=["a/hourly"])
    assert await fired_at(store, clock, START + timedelta(hours=1)) == ["a/tick", "b/tick"]


async def test_a_cron_dropped_by_the_app_that_runs_it_goes_whoever_registered_it(
    store: Store, clock: VirtualClock
) -> None:
    await register(store, "old-name", [cron("reports/nightly")])
    await register(store, "new-name", [], events=["reports/nightly"])
    assert await fired_at(store, clock, START + timedelta(hours=1)) == []


async def test_a_removed_functions_schedule_goes_when_its_app_restarts(
    store: Store, clock: VirtualClock
) -> None:
    await register(store, "a", [cron("a/tick"), cron("a/gone")])
    await register(store, "b", [cron("b/tick")])
    await register(store, "a", [cron("a/tick")])  # the function of a/gone was deleted
    assert await fired_at(store, clock, START + timedelta(hours=1)) == ["a/tick", "b/tick"]


async def test_a_function_moved_to_another_app_keeps_its_schedule(
    store: Store, clock: VirtualClock
) -> None:
    await register(store, "a", [cron("shared/tick"), cron("a/tick")])
    await register(store, "b", [cron("shared/tick")])  # b runs it now
    await register(store, "a", [cron("a/tick")])  # a no longer has the function
    assert await fired_at(store, clock, START + timedelta(hours=1)) == ["a/tick", "shared/tick"]


async def test_a_changed_expression_moves_the_next_tick(store: Store, clock: VirtualClock) -> None:
    await register(store, "a", [cron("a/tick", "0 * * * *")])
    await register(store, "a", [cron("a/tick", "30 * * * *")])
    assert await fired_at(store, clock, START + timedelta(minutes=29)) == []
    assert await fired_at(store, clock, START + timedelta(minutes=30)) == ["a/tick"]
    assert await fired_at(store, clock, START + timedelta(minutes=60)) == []


async def test_an_unchanged_expression_keeps_its_next_tick(
    store: Store, clock: VirtualClock
) -> None:
    await register(store, "a", [cron("a/tick", "0 0 * * *")])
    clock.set(START + timedelta(hours=11))
    # Registered again before its tick: the tick it was waiting for still fires once.
    await register(store, "a", [cron("a/tick", "0 0 * * *")])
    assert await fired_at(store, clock, START + timedelta(hours=12)) == ["a/tick"]


async def test_bad_registrations_are_refused_and_change_nothing(
    store: Store, clock: VirtualClock
) -> None:
    await register(store, "a", [cron("a/tick")])
    with pytest.raises(FunctionDefinitionError, match="0 0 31 2"):
        await register(store, "a", [cron("a/new"), cron("a/tick", "0 0 31 2 *")])
    with pytest.raises(InputError, match="app"):
        await store.set_schedules([], app="", events=["a/tick"])
    with pytest.raises(InputError, match="b/tick"):
        await store.set_schedules([cron("b/tick")], app="a", events=["a/tick"])
    assert await fired_at(store, clock, START + timedelta(hours=1)) == ["a/tick"]
