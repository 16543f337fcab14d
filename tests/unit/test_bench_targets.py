"""bench.bench_hot_path judges issue 10's targets from the medians of its figures."""

from __future__ import annotations

from bench.bench_hot_path import TARGETS, flatten, judge


def test_nested_figures_are_flattened_with_their_unit_last() -> None:
    figures = {"noop_runs_per_s": 10, "latency_ms": {"p50": 2.5, "p99": 9}, "peer": "x"}
    assert flatten("worker", figures) == {
        "worker.noop_runs_per_s": 10.0,
        "worker.latency_p50_ms": 2.5,
        "worker.latency_p99_ms": 9.0,
    }


def test_each_target_passes_or_fails_by_its_bound_and_direction() -> None:
    figures = {
        "pgqueuer.process_jobs_s": 1000.0,
        "worker.noop_runs_per_s": 1000.0,  # 1.0x: at the bound, passes
        "worker.workflow_steps_per_s": 1400.0,  # 1.4x of 1.5x: fails
        "local.noop_runs_per_s": 1200.0,
        "worker.latency_p50_ms": 4.0,
        "pgqueuer.lat_p50_ms": 5.0,  # 0.8x of at most 1.0x: passes
        "worker.latency_p99_ms": 12.0,  # absolute, at most 10 ms: fails
        "server.workflow_steps_per_s": 300.0,
        "server100.workflow_steps_per_s": 150.0,  # 2.0x slower, at most 1.5x: fails
    }
    verdicts = {v["target"]: (v["ratio"], v["pass"]) for v in judge(figures)}
    assert verdicts == {
        "no-op runs/s, worker / pgqueuer": (1.0, True),
        "10-step steps/s, worker / pgqueuer": (1.4, False),
        "no-op runs/s, local worker / pgqueuer": (1.2, True),
        "10-step steps/s, local worker / pgqueuer": (None, None),
        "send->start p50, worker / pgqueuer": (0.8, True),
        "send->start p99 ms, worker": (12.0, False),
        "single send_event/s / pgqueuer": (None, None),
        "send_events batch/s / pgqueuer": (None, None),
        "no-op runs/s, server / pgqueuer": (None, None),
        "server steps/s, 10-step / 100-step": (2.0, False),
    }
    assert len(verdicts) == len(TARGETS)
