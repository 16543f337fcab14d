"""The PostgreSQL store: ``PostgresStore`` and the ``migrate`` entry point.

Its tables live in their own schema (``slayq`` unless told otherwise), created and
upgraded by the versioned SQL files in ``migrations/`` whenever a store opens.
"""

from slayq.store.postgres._connect import NO_DATABASE, parse_url
from slayq.store.postgres._migrations import migrate, pending_migrations
from slayq.store.postgres._store import PostgresStore

__all__ = ["NO_DATABASE", "PostgresStore", "migrate", "parse_url", "pending_migrations"]
