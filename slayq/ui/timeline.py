"""A run's timeline: one lane per attempt, each showing which steps it replayed from the
memo and which it executed.

What is recorded: every step carries the attempt that recorded it, and every attempt (an
entry of ``RunInfo.history``; a run that suspends and resumes has several entries with
the same number) how many memo records it replayed. So in the lane of attempt N, the
steps recorded by attempt N were executed there, and the steps recorded before it were
replayed, as far as that attempt got (the most any of its entries replayed). A run made by
``rerun`` starts with the original's steps copied up to the chosen one; they keep the
original's attempt numbers, so they are told apart by count: its first attempt replayed
exactly them (before it ran, all its steps are copied).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import msgspec

from slayq.model import AttemptInfo, ErrorInfo, StepRecord

if TYPE_CHECKING:
    from slayq.model import RunInfo

Mode = Literal["replayed", "executed"]


class Cell(msgspec.Struct, frozen=True):
    step: StepRecord
    mode: Mode
    copied: bool = False  # from the run this one was rerun from


class Lane(msgspec.Struct, frozen=True):
    attempt: int
    entries: list[AttemptInfo]
    cells: list[Cell]

    @property
    def outcome(self) -> str:
        return self.entries[-1].outcome

    @property
    def error(self) -> ErrorInfo | None:
        return self.entries[-1].error


def copied_steps(run: RunInfo) -> int:
    """How many of the run's first steps were copied from the run it was rerun from."""
    if run.forked_from is None:
        return 0
    if not run.history:
        return len(run.steps)
    return min(run.history[0].replayed, len(run.steps))


def lanes(run: RunInfo) -> list[Lane]:
    copied = copied_steps(run)
    numbers = sorted({entry.number for entry in run.history})
    result: list[Lane] = []
    for number in numbers:
        entries = [e for e in run.history if e.number == number]
        reached = max(e.replayed for e in entries)
        earlier: list[Cell] = []
        own: list[Cell] = []
        for index, step in enumerate(run.steps):
            if index < copied:
                earlier.append(Cell(step, "replayed", copied=True))
            elif step.attempt is not None and step.attempt < number:
                earlier.append(Cell(step, "replayed"))
            elif step.attempt == number:
                own.append(Cell(step, "executed"))
        result.append(Lane(number, entries, earlier[:reached] + own))
    return result
