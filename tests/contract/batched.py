"""A PostgresStore whose every ``commit`` goes through ``commit_batch`` (the worker's and
the server's path), so the whole contract suite holds the batched commit to the same
behaviour as the single one."""

from __future__ import annotations

from slayq.model import Lease, Transition
from slayq.store.postgres import PostgresStore


class CommitsInBatches(PostgresStore):
    async def commit(self, lease: Lease, transition: Transition) -> None:
        batch = await self.commit_batch([(lease, transition)], claims=[])
        (error,) = batch.errors
        if error is not None:
            raise error
