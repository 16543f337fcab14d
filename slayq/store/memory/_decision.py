"""What a send-time flow control feature decides for one run (see ``_admit``); a module
of its own so that the features and ``_admit``, which lists them, import it both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from slayq.model import NewRun, RunId
    from slayq.store.memory._core import MemoryCore


@dataclass(frozen=True)
class Decision:
    """The run to start (maybe changed), or none and the id to answer instead."""

    run: NewRun | None
    answer: RunId | None = None
    # Told the event's final answer once every feature decided (idempotency keeps it).
    then: Callable[[RunId | None], None] | None = None


Feature = Callable[["MemoryCore", "NewRun", "datetime"], Decision]
