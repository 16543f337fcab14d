"""``slay-config.json``: queues, their cluster-wide concurrency and their aliases.

The same file as Slay Q's server reads::

    {"queues": {"mail": {"concurrency": 4},
                "messaging": {"concurrency": 6, "alias": ["dispatch", "ready"]}}}

An alias is another name for the same queue: runs sent to "dispatch" share messaging's
six slots, across every worker and server on the database.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from slayq.errors import ConfigError
from slayq.store.protocol import QueueLimit

EXAMPLE = '{"queues": {"general": {"concurrency": 10}, "mail": {"concurrency": 4, "alias": ["dispatch"]}}}'


class QueueConfig(msgspec.Struct, forbid_unknown_fields=True):
    concurrency: int
    alias: list[str] = []


class SlayConfig(msgspec.Struct, forbid_unknown_fields=True):
    queues: dict[str, QueueConfig]
    # Endpoint URL prefixes the server may deliver to (used by slayq.server).
    allowed_endpoints: list[str] = []

    def queue_limits(self, only: list[str] | None = None) -> list[QueueLimit]:
        """One limit per queue with its aliases; ``only`` keeps the named queues (or aliases)."""
        limits = [
            QueueLimit(names=[name, *queue.alias], concurrency=queue.concurrency)
            for name, queue in self.queues.items()
        ]
        if only is None:
            return limits
        known = {n for limit in limits for n in limit.names}
        unknown = sorted(set(only) - known)
        if unknown:
            raise ConfigError(
                f"--queues names {unknown}, which the config does not define "
                f"(it defines {sorted(known)})"
            )
        return [limit for limit in limits if set(limit.names) & set(only)]


def parse_config(raw: bytes, *, source: str = "slay-config.json") -> SlayConfig:
    try:
        config = msgspec.json.decode(raw, type=SlayConfig)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: {exc}. A valid config looks like: {EXAMPLE}") from None
    if not config.queues:
        raise ConfigError(f"{source}: no queues are defined. For example: {EXAMPLE}")
    seen: dict[str, str] = {}
    for name, queue in config.queues.items():
        if not name:
            raise ConfigError(f"{source}: a queue name is empty")
        if queue.concurrency < 1:
            raise ConfigError(
                f"{source}: queue {name!r} has concurrency {queue.concurrency}; it must be at "
                "least 1 (a queue of 0 would never run anything)"
            )
        for label in (name, *queue.alias):
            if label in seen:
                raise ConfigError(
                    f"{source}: {label!r} is used twice (by queue {seen[label]!r} and by queue "
                    f"{name!r}); every queue name and alias must be unique"
                )
            seen[label] = name
    return config


def load_config(path: str | Path) -> SlayConfig:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {exc.strerror}") from None
    return parse_config(raw, source=str(path))
