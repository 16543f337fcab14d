"""Property tests of the replayer: any workflow, any failures, any crash points.

A crash is simulated between a handler finishing and its commit: the transition is
dropped, the execution abandoned, and the clock moved past the lease so the run is
taken over and replayed from its memo, as after a worker's ``kill -9``.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slayq
from slayq import step
from slayq.model import Completed, Continue, RunId
from slayq.runtime.clock import VirtualClock
from slayq.runtime.registry import Registry
from slayq.runtime.replay import Execution
from slayq.runtime.sending import outgoing_event
from slayq.store.memory import MemoryStore

LEASE = timedelta(seconds=30)

# A workflow is a list of step specs:
#   ("run", failures)     a handler that raises on its first `failures` executions
#   ("parallel", [f, f])  handlers run side by side, each with its own failures
#   ("sleep", seconds) | ("wait", seconds)   a wait that times out | ("send",)
step_spec = st.one_of(
    st.tuples(st.just("run"), st.integers(0, 2)),
    st.tuples(st.just("parallel"), st.lists(st.integers(0, 1), min_size=2, max_size=3)),
    st.tuples(st.just("sleep"), st.integers(0, 3600)),
    st.tuples(st.just("wait"), st.integers(1, 600)),
    st.tuples(st.just("send")),
)
workflows = st.lists(step_spec, min_size=1, max_size=8)


class Keyed(msgspec.Struct):
    k: int = 0


class World:
    """One workflow function plus the bookkeeping the properties check."""

    def __init__(self, specs: list[tuple[Any, ...]]) -> None:
        self.specs = specs
        self.executions: Counter[str] = Counter()
        self.reruns_after_commit: list[str] = []
        self.store: MemoryStore | None = None
        self.run_id: RunId | None = None
        self.function = self._build()

    def _handler(self, name: str, failures: int, inputs: list[Any]) -> Any:
        async def handler() -> Any:
            assert self.store is not None and self.run_id is not None
            committed = {s.name for s in (await self.store.get_run(self.run_id)).steps}
            if name in committed:
                self.reruns_after_commit.append(name)
            self.executions[name] += 1
            if self.executions[name] <= failures:
                raise RuntimeError(f"{name} fails on execution {self.executions[name]}")
            return {"step": name, "seen": len(inputs), "last": inputs[-1] if inputs else None}

        return handler

    def _build(self) -> slayq.Function:
        specs = self.specs

        @slayq.function(
            event="prop/run", schema=Keyed, retries=1000, waits_on=[slayq.Match("prop/never", "k")]
        )
        async def workflow(ctx: slayq.Context[Keyed]) -> slayq.Workflow:
            outputs: list[Any] = []
            for index, spec in enumerate(specs):
                name = f"s{index}"
                if spec[0] == "run":
                    outputs.append((yield step.run(name, self._handler(name, spec[1], outputs))))
                elif spec[0] == "parallel":
                    commands = [
                        step.run(f"{name}.{i}", self._handler(f"{name}.{i}", f, outputs))
                        for i, f in enumerate(spec[1])
                    ]
                    outputs.append(list((yield step.parallel(*commands))))
                elif spec[0] == "sleep":
                    outputs.append((yield step.sleep(name, spec[1])))
                elif spec[0] == "wait":
                    outputs.append((yield step.wait_for_event(name, "prop/never", spec[1])))
                else:
                    outputs.append((yield step.send_event(name, "prop/never", {"k": index})))
            yield slayq.finish(outputs)

        return workflow


async def run_world(world: World, crashes: list[bool]) -> Any:
    """Drive the workflow to the end; crash wherever ``crashes`` says (cycled)."""
    clock = VirtualClock(datetime(2025, 1, 1, tzinfo=UTC))
    store = world.store = MemoryStore(clock)
    registry = Registry([world.function])
    (run_id,) = await store.send_events([outgoing_event(registry, "prop/run", {})])
    assert run_id is not None
    world.run_id = run_id
    decisions = iter(crashes)
    for _ in range(2000):
        claims = await store.claim(queues=None, limit=1, lease_for=LEASE, owner="prop")
        if not claims:
            wakeup = await store.next_wakeup()
            if wakeup is None:
                break
            clock.set(max(wakeup, clock.now()))
            continue
        execution = Execution.start(registry, claims[0])
        while True:
            transition = await execution.advance()
            if next(decisions, False):
                await execution.aclose()  # the worker dies: nothing of this drive is committed
                clock.advance(LEASE + timedelta(seconds=1))
                break
            await store.commit(claims[0].lease, transition)
            if not isinstance(transition.outcome, Continue):
                break
    run = await store.get_run(run_id)
    assert run.status == "completed", (run.status, run.error)
    return run


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=workflows, crashes=st.lists(st.booleans(), max_size=30))
def test_committed_steps_never_rerun_and_faults_do_not_change_the_result(
    specs: list[tuple[Any, ...]], crashes: list[bool]
) -> None:
    async def scenario() -> None:
        calm = World(specs)
        calm_run = await run_world(calm, [])
        faulty = World(specs)
        faulty_run = await run_world(faulty, crashes)

        assert faulty.reruns_after_commit == []
        assert calm.reruns_after_commit == []
        assert faulty_run.result == calm_run.result
        assert [s.name for s in faulty_run.steps] == [s.name for s in calm_run.steps] or {
            s.name for s in faulty_run.steps
        } == {s.name for s in calm_run.steps}

        # Replaying the finished run's memo executes no handler and gives the same result.
        before = sum(faulty.executions.values())
        assert faulty.store is not None and faulty.run_id is not None
        replay = Execution(
            faulty.function,
            Registry([faulty.function]),
            run_id=faulty.run_id,
            data={"k": 0},
            attempt=faulty_run.attempts,
            max_attempts=faulty_run.max_attempts,
            memo=faulty_run.steps,
        )
        transition = await replay.advance()
        assert transition.outcome == Completed(faulty_run.result)
        assert transition.steps == [] and transition.sent == []
        assert sum(faulty.executions.values()) == before

    anyio.run(scenario)
