"""Stores: where runs, steps, waits and schedules live. See ``Store``."""

from slayq.store.memory import MemoryStore
from slayq.store.protocol import QueueLimit, Store

__all__ = ["MemoryStore", "QueueLimit", "Store"]
