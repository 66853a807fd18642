"""Delivery: spans are kept in memory and sent, once per invocation, before the handler returns.

No background thread: Lambda freezes the environment as soon as the handler
returns, so a batch thread would hold spans that arrive late or never.  The
flush is bounded by a deadline, and after a failed export the processor pauses
(1 s, doubling up to ``export_cooloff_ms``) so that a dead collector costs
almost nothing per invocation.  Spans are kept (up to ``max_queue_size``) and
sent when the collector answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

logger = logging.getLogger("tracing")

_FIRST_COOLOFF_S = 1.0


class Backoff:
    """Pauses exports after failures: 1 s, doubling while they fail, up to ``max_s``."""

    def __init__(self, max_s: float) -> None:
        self._max = max_s
        self._current = 0.0
        self._until = 0.0

    def paused(self) -> bool:
        """True while exports should not be tried."""
        return self._current > 0.0 and time.monotonic() < self._until

    @property
    def failing(self) -> bool:
        """True from a failure until the next success: the next export is a probe."""
        return self._current > 0.0

    def failed(self) -> float:
        """Record a failure; returns the pause now in force, in seconds."""
        self._current = min(self._max, self._current * 2 if self._current else _FIRST_COOLOFF_S)
        self._until = time.monotonic() + self._current
        return self._current

    def succeeded(self) -> None:
        self._current = 0.0


class SpanSender(Protocol):
    """What the processor needs of an exporter: send or raise, within ``timeout``."""

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None: ...

    def close(self) -> None: ...


@dataclass
class DeliveryStats:
    """Counters of what the processor did since it was created."""

    exported: int = 0
    dropped: int = 0
    failed_exports: int = 0
    skipped_flushes: int = 0


class InvocationSpanProcessor(SpanProcessor):
    """Keeps finished sampled spans and exports them when :meth:`flush` is called.

    After a failed export, exports pause; the first one after the pause is a
    *probe* that waits at most ``probe_timeout_ms``, so that a collector that
    accepts connections but never answers costs one full ``timeout_ms`` once,
    and almost nothing afterwards.
    """

    def __init__(
        self,
        sender: SpanSender,
        *,
        timeout_ms: int = 250,
        max_cooloff_ms: int = 30_000,
        max_queue_size: int = 2048,
        probe_timeout_ms: int = 50,
    ) -> None:
        self._sender = sender
        self._timeout = timeout_ms / 1000.0
        self._probe_timeout = min(timeout_ms, probe_timeout_ms) / 1000.0
        self._queue: deque[ReadableSpan] = deque(maxlen=max_queue_size)
        self._max_queue = max_queue_size
        self._lock = threading.Lock()
        self._backoff = Backoff(max_cooloff_ms / 1000.0)
        self.stats = DeliveryStats()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.stats.dropped += 1  # the bounded deque drops the oldest on append
        queue.append(span)

    def flush(self, timeout: float | None = None) -> bool:
        """Export every kept span; True when they were delivered (or none was kept)."""
        with self._lock:
            if not self._queue:
                return True
            if self._backoff.paused():
                self.stats.skipped_flushes += 1
                return False
            batch = list(self._queue)
            self._queue.clear()
            limit = self._probe_timeout if self._backoff.failing else self._timeout
        if timeout is not None:
            limit = min(limit, timeout)
        try:
            self._sender.export(batch, limit)
        except Exception as exc:
            self._failed(batch, exc)
            return False
        self._backoff.succeeded()
        self.stats.exported += len(batch)
        return True

    def _failed(self, batch: list[ReadableSpan], exc: Exception) -> None:
        # Send again only what certainly did not arrive: after a timeout the collector
        # may have the spans already, and sending them again would duplicate them.
        retryable = getattr(exc, "retryable", True)
        with self._lock:
            self.stats.failed_exports += 1
            pause = self._backoff.failed()
            # Put the batch back in front of anything that ended meanwhile.
            room = self._max_queue - len(self._queue)
            keep = batch[-room:] if room > 0 and retryable else []
            self.stats.dropped += len(batch) - len(keep)
            self._queue.extendleft(reversed(keep))
        logger.warning("tracing: span export failed (%s); pausing exports for %.0f s", exc, pause)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.flush(min(self._timeout, timeout_millis / 1000.0))

    def shutdown(self) -> None:
        self.flush()
        self._sender.close()

    def pending(self) -> int:
        """How many spans wait for the next flush."""
        return len(self._queue)


class ConsoleSender:
    """Prints each span as one line of JSON on standard output."""

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        import sys

        for span in spans:
            sys.stdout.write(span.to_json(indent=None) + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        pass
