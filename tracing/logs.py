"""Log correlation: trace ids on every log record, and a JSON formatter that shows them.

:func:`install` (done by :func:`tracing.setup_tracing` unless
``DSQLTRACE_LOG_CORRELATION=false``) wraps the log-record factory so that each
record carries ``trace_id`` and ``span_id`` (hex, OpenTelemetry's form) and
``dd.trace_id`` and ``dd.span_id`` (decimal, the low 64 bits, as Datadog
correlates them).  Use them in a format string (``%(trace_id)s``) or with
:class:`JsonFormatter`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

__all__ = ["JsonFormatter", "install", "uninstall"]

_LOW_64 = (1 << 64) - 1
_previous_factory: Callable[..., logging.LogRecord] | None = None


def install() -> None:
    """Add trace ids to every log record made from now on (idempotent)."""
    global _previous_factory
    if _previous_factory is not None:
        return
    previous = logging.getLogRecordFactory()
    _previous_factory = previous

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = f"{ctx.trace_id:032x}"
            record.span_id = f"{ctx.span_id:016x}"
            record.__dict__["dd.trace_id"] = str(ctx.trace_id & _LOW_64)
            record.__dict__["dd.span_id"] = str(ctx.span_id)
        else:
            record.trace_id = record.span_id = ""
            record.__dict__["dd.trace_id"] = record.__dict__["dd.span_id"] = "0"
        return record

    logging.setLogRecordFactory(factory)


def uninstall() -> None:
    """Restore the log-record factory that :func:`install` wrapped."""
    global _previous_factory
    if _previous_factory is not None:
        logging.setLogRecordFactory(_previous_factory)
        _previous_factory = None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", "")
            entry["dd"] = {
                "trace_id": record.__dict__["dd.trace_id"],
                "span_id": record.__dict__["dd.span_id"],
            }
        request_id = getattr(record, "aws_request_id", None)
        if request_id:
            entry["aws_request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
