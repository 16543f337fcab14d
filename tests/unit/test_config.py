"""slay-config.json: the seed's file parses; mistakes are named with a fix."""

from __future__ import annotations

import pytest

from slayq.errors import ConfigError
from slayq.store.protocol import QueueLimit
from slayq.worker.config import parse_config

SEED_CONFIG = b"""{
  "queues": {
    "mail": {"concurrency": 4},
    "messaging": {"concurrency": 6, "alias": ["dispatch", "ready"]},
    "interactions": {"concurrency": 1, "alias": ["reconcile", "discord"]},
    "housekeeping": {"concurrency": 2},
    "profile": {"concurrency": 8},
    "general": {"concurrency": 10}
  }
}"""


def test_the_seed_config_parses_and_aliases_share_their_queue_limit() -> None:
    config = parse_config(SEED_CONFIG)
    limits = config.queue_limits()
    assert QueueLimit(names=["messaging", "dispatch", "ready"], concurrency=6) in limits
    assert len(limits) == 6
    assert config.queue_limits(["ready"]) == [
        QueueLimit(names=["messaging", "dispatch", "ready"], concurrency=6)
    ]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'{"queues": {"mail": {"concurrency": 0}}}', "concurrency 0; it must be at least 1"),
        (b'{"queues": {"mail": {"concurrency": "4"}}}', "Expected `int`, got `str`"),
        (b'{"queues": {"mail": {"concurency": 4}}}', "unknown field `concurency`"),
        (b'{"queue": {}}', "unknown field `queue`"),
        (b'{"queues": {}}', "no queues are defined"),
        (
            b'{"queues": {"a": {"concurrency": 1, "alias": ["x"]}, "b": {"concurrency": 1, "alias": ["x"]}}}',
            "'x' is used twice",
        ),
        (b'{"queues": {"a": {"concurrency": 1, "alias": ["a"]}}}', "'a' is used twice"),
        (b"not json", "malformed"),
    ],
)
def test_config_mistakes_are_named(raw: bytes, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        parse_config(raw, source="slay-config.json")
    assert str(info.value).startswith("slay-config.json")


def test_restricting_to_an_unknown_queue_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\['medai'\]"):
        parse_config(SEED_CONFIG).queue_limits(["medai"])
