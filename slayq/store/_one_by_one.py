"""``commit_batch`` for stores without a batched path: each commit, then each claim."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from slayq.errors import StoreError
from slayq.store.protocol import Batch

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from slayq.model import Claim, Lease, Transition
    from slayq.store.protocol import ClaimRequest, QueueLimit


class _Commit(Protocol):
    async def __call__(self, lease: Lease, transition: Transition, /) -> None: ...


class _Claim(Protocol):
    async def __call__(
        self,
        *,
        queues: Sequence[QueueLimit] | None,
        limit: int,
        lease_for: timedelta,
        owner: str,
    ) -> list[Claim]: ...


async def commit_one_by_one(
    commit: _Commit,
    claim: _Claim,
    commits: Sequence[tuple[Lease, Transition]],
    claims: Sequence[ClaimRequest],
) -> Batch:
    errors: list[StoreError | None] = []
    for lease, transition in commits:
        try:
            await commit(lease, transition)
        except StoreError as exc:
            errors.append(exc)
        else:
            errors.append(None)
    claimed: list[list[Claim]] = []
    try:
        for request in claims:
            claimed.append(
                await claim(
                    queues=request.queues,
                    limit=request.limit,
                    lease_for=request.lease_for,
                    owner=request.owner,
                )
            )
    except StoreError as exc:
        return Batch(errors=errors, claims=[[] for _ in claims], claim_error=exc)
    return Batch(errors=errors, claims=claimed)
