"""Delivery: finished spans are kept in memory and sent in bounded batches when flushed.

No batch thread: Lambda freezes the environment as soon as the invocation
ends, so a thread of its own would hold spans that arrive late or never.
Each flush is bounded by one deadline (``timeout_ms``) that covers encoding,
connecting, sending, the answer and any retry.  A flush sends batches of at
most :data:`MAX_BATCH_SPANS` spans and :data:`MAX_BATCH_BYTES` bytes and
starts no new batch after half its time, so a backlog kept during an outage
drains over the next invocations instead of stalling one.  After a failed
export the processor pauses (1 s, doubling up to ``max_cooloff_ms``); the
first attempt after a pause is a probe bounded by ``probe_timeout_ms``.

What is kept is bounded twice: ``max_queue_size`` spans and
``max_queue_bytes`` estimated bytes; the oldest spans go first, counted in
:attr:`DeliveryStats.dropped`.  A batch the sender could not send for a reason
other than "it certainly did not arrive" (refused, HTTP 429/502/503/504) is
dropped, never put back: no span can hold back the others.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tracing.runtime import logger

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_SPANS",
    "Backoff",
    "ConsoleSender",
    "DeliveryStats",
    "InvocationSpanProcessor",
    "SpanSender",
    "estimated_size",
]

#: The most spans one export request carries.
MAX_BATCH_SPANS = 512
#: The most estimated bytes one export request carries (at least one span).
MAX_BATCH_BYTES = 1024 * 1024
#: A probe (the first export after a pause) carries at most this many spans.
PROBE_BATCH_SPANS = 64
_FIRST_COOLOFF_S = 1.0

Clock = Callable[[], float]


class Backoff:
    """Pauses exports after failures: 1 s, doubling while they fail, up to ``max_s``.

    ``clock`` (default ``time.monotonic``) is what tests replace to end a pause.
    """

    def __init__(self, max_s: float, *, clock: Clock = time.monotonic) -> None:
        self._max = max_s
        self._clock = clock
        self._current = 0.0
        self._until = 0.0

    def paused(self) -> bool:
        """True while exports should not be tried."""
        return self._current > 0.0 and self._clock() < self._until

    @property
    def failing(self) -> bool:
        """True from a failure until the next success: the next export is a probe."""
        return self._current > 0.0

    def failed(self) -> float:
        """Record a failure; returns the pause now in force, in seconds."""
        self._current = min(self._max, self._current * 2 if self._current else _FIRST_COOLOFF_S)
        self._until = self._clock() + self._current
        return self._current

    def succeeded(self) -> None:
        """Record a success: the pause is over."""
        self._current = 0.0


class SpanSender(Protocol):
    """What the processor needs of an exporter: send within ``timeout`` seconds, or raise.

    An exception with ``retryable = True`` (or a ``ConnectionRefusedError``) means
    the spans certainly did not arrive: they are kept and sent again.
    """

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None: ...

    def close(self) -> None: ...


class DeliveryStats:
    """Counters of what the processor did since it was created."""

    __slots__ = ("dropped", "exported", "failed_exports", "skipped_flushes")

    def __init__(self) -> None:
        self.exported = 0
        self.dropped = 0
        self.failed_exports = 0
        self.skipped_flushes = 0

    def __repr__(self) -> str:
        return (
            f"DeliveryStats(exported={self.exported}, dropped={self.dropped}, "
            f"failed_exports={self.failed_exports}, skipped_flushes={self.skipped_flushes})"
        )


def _value_size(value: object) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 4
    if isinstance(value, tuple | list):
        return sum(_value_size(v) for v in value) + 4
    return 11


def estimated_size(span: ReadableSpan) -> int:
    """About how many bytes ``span`` takes encoded (strings counted by characters)."""
    size = 64 + len(span.name)
    attributes = span.attributes
    if attributes:
        for key, value in attributes.items():
            kind = type(value)  # the usual kinds inline: this runs for every span
            if kind is str:
                size += len(key) + len(value) + 8  # type: ignore[arg-type]
            elif kind is int or kind is bool or kind is float:
                size += len(key) + 15
            else:
                size += len(key) + _value_size(value) + 4
    for event in span.events:
        size += 16 + len(event.name)
        if event.attributes:
            for key, value in event.attributes.items():
                size += len(key) + _value_size(value) + 4
    return size + 40 * len(span.links)


def _retryable(exc: BaseException) -> bool:
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    return isinstance(exc, ConnectionRefusedError)


class InvocationSpanProcessor:
    """Keeps finished sampled spans and exports them when :meth:`flush` is called.

    It is the :class:`tracing.runtime.Delivery` of the OTLP and console exporters,
    and a span processor of the toolkit's provider (:mod:`tracing.tracer`) or of
    the SDK's (it has the methods an SDK ``SpanProcessor`` has, without importing
    the SDK).
    """

    #: Nothing to do when a span starts: the lean provider does not call :meth:`on_start`.
    uses_on_start = False

    def __init__(
        self,
        sender: SpanSender,
        *,
        timeout_ms: int = 250,
        max_cooloff_ms: int = 30_000,
        max_queue_size: int = 2048,
        max_queue_bytes: int = 4 * 1024 * 1024,
        probe_timeout_ms: int = 50,
        clock: Clock = time.monotonic,
    ) -> None:
        self._sender = sender
        self._timeout = timeout_ms / 1000.0
        self._probe_timeout = min(timeout_ms, probe_timeout_ms) / 1000.0
        self._queue: deque[tuple[ReadableSpan, int]] = deque()
        self._bytes = 0
        self._max_queue = max_queue_size
        self._max_bytes = max_queue_bytes
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._clock = clock
        self.backoff = Backoff(max_cooloff_ms / 1000.0, clock=clock)
        self.stats = DeliveryStats()

    @property
    def sender(self) -> SpanSender:
        """Where the spans go."""
        return self._sender

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        pass

    def _on_ending(self, span: Any) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        try:
            size = estimated_size(span)
        except Exception:  # a span that cannot be measured is still kept (and counted)
            size = 1024
        with self._lock:
            queue = self._queue
            queue.append((span, size))
            self._bytes += size
            while len(queue) > self._max_queue or self._bytes > self._max_bytes:
                self._bytes -= queue.popleft()[1]
                self.stats.dropped += 1

    def flush(self, timeout: float | None = None) -> bool:
        """Export kept spans within ``timeout`` (default: the flush timeout); True when
        none is left.  One flush runs at a time; another one waits within its own bound."""
        limit = self._timeout if timeout is None else min(self._timeout, max(timeout, 0.0))
        start = self._clock()
        if not self._flush_lock.acquire(timeout=limit):
            return False
        try:
            with self._lock:
                if not self._queue:
                    return True
                if self.backoff.paused():
                    self.stats.skipped_flushes += 1
                    return False
                probing = self.backoff.failing
            if probing:
                limit = min(limit, self._probe_timeout)
            deadline = start + limit
            no_new_batch_after = start + limit / 2
            while True:
                batch = self._take(PROBE_BATCH_SPANS if probing else MAX_BATCH_SPANS)
                if not batch:
                    return True
                remaining = deadline - self._clock()
                if remaining <= 0:
                    self._put_back(batch)
                    return False
                try:
                    self._sender.export([span for span, _ in batch], remaining)
                except Exception as exc:
                    self._failed(batch, exc)
                    return False
                self.backoff.succeeded()
                self.stats.exported += len(batch)
                if probing or self._clock() >= no_new_batch_after:
                    return self.pending() == 0
        finally:
            self._flush_lock.release()

    def _take(self, most: int) -> list[tuple[ReadableSpan, int]]:
        batch: list[tuple[ReadableSpan, int]] = []
        size = 0
        with self._lock:
            queue = self._queue
            while queue and len(batch) < most:
                item = queue[0]
                if batch and size + item[1] > MAX_BATCH_BYTES:
                    break
                batch.append(queue.popleft())
                size += item[1]
            self._bytes -= size
        return batch

    def _put_back(self, batch: list[tuple[ReadableSpan, int]]) -> None:
        """Return ``batch`` to the front of the queue, within the bounds (oldest dropped)."""
        with self._lock:
            queue = self._queue
            for item in reversed(batch):
                if len(queue) >= self._max_queue or self._bytes + item[1] > self._max_bytes:
                    self.stats.dropped += 1
                    continue
                queue.appendleft(item)
                self._bytes += item[1]

    def _failed(self, batch: list[tuple[ReadableSpan, int]], exc: Exception) -> None:
        # Send again only what certainly did not arrive: after a timeout the collector
        # may have the spans already, and sending them again would duplicate them.
        retryable = _retryable(exc)
        with self._lock:
            self.stats.failed_exports += 1
            pause = self.backoff.failed()
            if not retryable:
                self.stats.dropped += len(batch)
        if retryable:
            self._put_back(batch)
        if getattr(exc, "logged", False):
            return
        logger.warning(
            "tracing: span export failed (%s: %s); %s; pausing exports for %.0f s",
            type(exc).__name__,
            exc,
            "spans kept" if retryable else f"{len(batch)} spans dropped",
            pause,
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.flush(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        self.flush()
        self._sender.close()

    def drop_pending(self) -> int:
        """Drop the spans waiting for delivery (counted as dropped); how many there were."""
        with self._lock:
            count = len(self._queue)
            self._queue.clear()
            self._bytes = 0
            self.stats.dropped += count
        return count

    def resume(self) -> None:
        """After a SnapStart restore: forget the pause that failures before the snapshot
        set (the collector may be up by now, and the clock has jumped)."""
        self.backoff.succeeded()

    def disconnect(self) -> None:
        """Close the exporter's connection; the next flush opens a new one (SnapStart
        calls it before the snapshot)."""
        try:
            self._sender.close()
        except Exception as exc:
            logger.warning("tracing: could not close the exporter's connection: %s", exc)

    def pending(self) -> int:
        """How many spans wait for the next flush."""
        return len(self._queue)

    def pending_bytes(self) -> int:
        """Their estimated encoded size."""
        return self._bytes


class ConsoleSender:
    """Prints each span as one line of JSON on standard output."""

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        out = sys.stdout
        for span in spans:
            out.write(span.to_json(indent=None) + "\n")
        out.flush()

    def close(self) -> None:
        pass
