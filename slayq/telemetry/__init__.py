"""Logs, Prometheus metrics and OpenTelemetry traces, emitted where things happen.

* ``logs``: the current run's ``run_id``/``event``/``queue``/``attempt``/``step`` in a
  context variable, a ``RunContextFilter`` that puts them on log records (the user's too),
  and a ``JsonFormatter`` for ``--log-format json``.
* ``metrics``: the ``slayq_*`` Prometheus metrics on ``prometheus_client``'s default registry.
* ``tracing``: a span per attempt and per executed step, and the W3C trace context that
  travels with a run; does nothing unless an OpenTelemetry SDK is installed and set up.

This package sits low: the engine, the worker and the server import it; it imports
nothing of slayq but the model.
"""

from __future__ import annotations

from slayq.telemetry.logs import JsonFormatter, RunContextFilter, configure_logging, log_context

__all__ = ["JsonFormatter", "RunContextFilter", "configure_logging", "log_context"]
