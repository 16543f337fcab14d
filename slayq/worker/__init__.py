"""The in-process worker: ``Worker`` and ``python -m slayq.worker``."""

from slayq.worker.config import SlayConfig, load_config, parse_config
from slayq.worker.dispatcher import Dispatcher
from slayq.worker.worker import Worker

__all__ = ["Dispatcher", "SlayConfig", "Worker", "load_config", "parse_config"]
