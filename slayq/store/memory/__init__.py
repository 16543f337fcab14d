"""An in-memory store: for users' unit tests (through ``slayq.testing.Harness``) and ours.

It passes the same contract suite as the Postgres store. ``_core`` holds runs, claims and
commits; ``_operations`` adds the operator's queries and actions; ``_records`` the
records they keep and how those become the copies the store answers.
"""

from slayq.store.memory._operations import MemoryStore

__all__ = ["MemoryStore"]
