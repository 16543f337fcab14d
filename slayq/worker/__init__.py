"""The in-process worker: ``Worker`` and ``python -m slayq.worker``."""

from slayq.worker.config import SlayConfig, load_config, parse_config
from slayq.worker.worker import Worker

__all__ = ["SlayConfig", "Worker", "load_config", "parse_config"]
