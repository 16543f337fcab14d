"""Issue 10's targets: slayq against PgQueuer and a raw psycopg loop, measured alternately.

    python -m bench.bench_hot_path [--rounds 3]     # about 2-3 minutes a round
    python -m bench.bench_hot_path --quick          # small sizes, one round: that it runs

Each round runs, in alternating order (odd rounds slayq first, even rounds the peers):
- ``bench.bench_postgres`` through an in-process worker: every figure (no-op runs/s,
  10-step workflow steps/s, send->handler latency, single ``send_event``/s,
  ``send_events`` batch events/s), its queue under a cluster-wide concurrency of 10;
- the same worker without a config (``--via worker-local``: ten at once in the process,
  no limit across processes, claiming ahead, as PgQueuer's bench runs): no-op runs/s and
  10-step workflow steps/s;
- ``bench.bench_postgres`` through ``slayq.server`` (HTTP to the app on loopback): no-op
  runs/s and 10-step workflow steps/s on one database, 100-step workflow steps/s (a tenth
  as many workflows: the same number of steps) on another;
- ``peers.sh pgqueuer raw`` (``--peers-script``), one JSON line per peer, with the same
  sizes: ``BENCH_N_JOBS`` = ``--runs``, ``BENCH_N_SINGLE`` = ``--singles``,
  ``BENCH_N_LAT`` = ``--samples``.

Then prints the median of every figure over the rounds, each target's ratio (of those
medians) with pass/fail, as tables, and one JSON line with all of it and every round's
figures. Figures are from a shared machine: compare ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from bench.bench_postgres import REPO, one_round

PEER_NAMES = {"pgqueuer[apg]": "pgqueuer", "raw_psycopg": "raw"}
PEERS_SCRIPTS = [REPO.parent / "shared/bench/peers.sh", Path("/work/shared/bench/peers.sh")]


@dataclass(frozen=True)
class Target:
    """``ours / theirs`` (figure names into the medians) compared with ``bound``: at least
    it when ``at_least``, else at most. ``theirs`` None: ``ours`` alone is the ratio."""

    name: str
    ours: str
    theirs: str | None
    bound: float
    at_least: bool = True


TARGETS = [
    Target(
        "no-op runs/s, worker / pgqueuer", "worker.noop_runs_per_s", "pgqueuer.process_jobs_s", 1.0
    ),
    Target(
        "10-step steps/s, worker / pgqueuer",
        "worker.workflow_steps_per_s",
        "pgqueuer.process_jobs_s",
        1.5,
    ),
    Target(
        "no-op runs/s, local worker / pgqueuer",
        "local.noop_runs_per_s",
        "pgqueuer.process_jobs_s",
        1.0,
    ),
    Target(
        "10-step steps/s, local worker / pgqueuer",
        "local.workflow_steps_per_s",
        "pgqueuer.process_jobs_s",
        1.5,
    ),
    Target(
        "send->start p50, worker / pgqueuer",
        "worker.latency_p50_ms",
        "pgqueuer.lat_p50_ms",
        1.0,
        at_least=False,
    ),
    Target("send->start p99 ms, worker", "worker.latency_p99_ms", None, 10.0, at_least=False),
    Target(
        "single send_event/s / pgqueuer",
        "worker.send_event_per_s",
        "pgqueuer.enqueue_single_jobs_s",
        0.8,
    ),
    Target(
        "send_events batch/s / pgqueuer",
        "worker.send_events_batch_per_s",
        "pgqueuer.enqueue_batch_jobs_s",
        1.0,
    ),
    Target(
        "no-op runs/s, server / pgqueuer", "server.noop_runs_per_s", "pgqueuer.process_jobs_s", 0.35
    ),
    Target(
        "server steps/s, 10-step / 100-step",
        "server.workflow_steps_per_s",
        "server100.workflow_steps_per_s",
        1.5,
        at_least=False,
    ),
]


@dataclass(frozen=True)
class Sizes:
    runs: int
    singles: int
    workflows: int
    samples: int


def flatten(prefix: str, figures: dict[str, Any]) -> dict[str, float]:
    """``{"latency_ms": {"p50": 1}}`` as ``{"<prefix>.latency_p50_ms": 1}``; numbers only."""
    flat: dict[str, float] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            stem, _, unit = key.rpartition("_")
            for part, number in value.items():
                flat[f"{prefix}.{stem}_{part}_{unit}"] = float(number)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}.{key}"] = float(value)
    return flat


async def slayq_round(sizes: Sizes) -> dict[str, float]:
    worker = await one_round(
        sizes.runs, sizes.workflows, sizes.samples, "worker", singles=sizes.singles
    )
    local = await one_round(
        sizes.runs, sizes.workflows, 0, "worker-local", figures_wanted=("noop", "workflow")
    )
    server = await one_round(
        sizes.runs, sizes.workflows, 0, "server", figures_wanted=("noop", "workflow")
    )
    server100 = await one_round(
        0, max(sizes.workflows // 10, 1), 0, "server", steps=100, figures_wanted=("workflow",)
    )
    return (
        flatten("worker", worker)
        | flatten("local", local)
        | flatten("server", server)
        | flatten("server100", server100)
    )


def peers_round(script: Path, sizes: Sizes) -> dict[str, float]:
    env = {
        **os.environ,
        "BENCH_N_JOBS": str(sizes.runs),
        "BENCH_N_SINGLE": str(sizes.singles),
        "BENCH_N_LAT": str(sizes.samples),
    }
    done = subprocess.run(
        ["bash", str(script), *PEER_NAMES.values()],
        env=env,
        stdout=subprocess.PIPE,
        check=True,
        text=True,
    )
    figures: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            figures |= flatten(PEER_NAMES.get(result["peer"], result["peer"]), result)
    return figures


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    keys = sorted({key for figures in rounds for key in figures})
    return {
        key: round(statistics.median(f[key] for f in rounds if key in f), 2)
        for key in keys
        if not key.endswith((".n_jobs", ".lat_n", ".lat_expected", ".concurrency", ".process_s"))
    }


def judge(figures: dict[str, float]) -> list[dict[str, Any]]:
    """Each target's ratio and whether it holds (None: a figure is missing)."""
    verdicts = []
    for target in TARGETS:
        ours = figures.get(target.ours)
        theirs = 1.0 if target.theirs is None else figures.get(target.theirs)
        ratio = None if ours is None or not theirs else round(ours / theirs, 3)
        passed = None
        if ratio is not None:
            passed = ratio >= target.bound if target.at_least else ratio <= target.bound
        verdicts.append(
            {
                "target": target.name,
                "ratio": ratio,
                "bound": f"{'>=' if target.at_least else '<='} {target.bound}",
                "pass": passed,
            }
        )
    return verdicts


def print_tables(figures: dict[str, float], verdicts: list[dict[str, Any]], rounds: int) -> None:
    print(f"medians of {rounds} round(s)")
    for key, value in figures.items():
        print(f"  {key:42} {value:>12,.2f}")
    print(f"\n  {'target':38} {'ratio':>8} {'bound':>8}  result")
    for v in verdicts:
        ratio = "-" if v["ratio"] is None else f"{v['ratio']:.3f}"
        result = {True: "pass", False: "FAIL", None: "missing"}[v["pass"]]
        print(f"  {v['target']:38} {ratio:>8} {v['bound']:>8}  {result}")


def find_peers_script(given: str | None) -> Path:
    for candidate in [Path(given)] if given else PEERS_SCRIPTS:
        if candidate.is_file():
            return candidate
    sys.exit(f"peers.sh not found (tried {', '.join(map(str, PEERS_SCRIPTS))}): --peers-script")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5_000, help="no-op runs (peers: jobs)")
    parser.add_argument("--singles", type=int, default=1_000, help="single sends")
    parser.add_argument("--workflows", type=int, default=500, help="10-step workflows")
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument("--peers-script", help=f"default: the first of {PEERS_SCRIPTS}")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.runs, args.singles, args.workflows, args.samples = 1, 1000, 100, 20, 20
    script = find_peers_script(args.peers_script)
    sizes = Sizes(args.runs, args.singles, args.workflows, args.samples)
    per_round: list[dict[str, float]] = []
    for number in range(args.rounds):
        figures: dict[str, float] = {}
        slayq_first = number % 2 == 0
        for side in ("slayq", "peers") if slayq_first else ("peers", "slayq"):
            if side == "slayq":
                figures |= anyio.run(slayq_round, sizes)
            else:
                figures |= peers_round(script, sizes)
        print(f"round {number + 1}: {json.dumps(figures)}", file=sys.stderr)
        per_round.append(figures)
    figures = medians(per_round)
    verdicts = judge(figures)
    print_tables(figures, verdicts, args.rounds)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "sizes": asdict(sizes),
                "medians": figures,
                "targets": verdicts,
                "per_round": per_round,
            }
        )
    )


if __name__ == "__main__":
    main()
