"""Helpers for tests of code that uses the toolkit: capture spans in memory, reset state.

>>> from tracing.testing import capture_spans, reset_tracing
>>> sink = capture_spans()          # setup_tracing() with an in-memory exporter
>>> ...                             # invoke your handler
>>> [s.name for s in sink.spans]    # what the last flushes delivered
>>> reset_tracing()                 # as if the process were new
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.util._once import Once

from tracing import coldstart, setup
from tracing.export import InvocationSpanProcessor

__all__ = ["InMemorySender", "capture_spans", "reset_tracing"]


class InMemorySender:
    """Keeps every exported batch; ``fail`` makes exports raise (to test failure paths)."""

    def __init__(self) -> None:
        self.batches: list[list[ReadableSpan]] = []
        self.fail = False
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan], timeout: float) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionRefusedError("in-memory collector is down")
        self.batches.append(list(spans))

    def close(self) -> None:
        pass

    @property
    def spans(self) -> list[ReadableSpan]:
        """Every span delivered so far, in order."""
        return [s for batch in self.batches for s in batch]

    def clear(self) -> None:
        self.batches.clear()


def capture_spans(
    *,
    service_name: str = "test",
    flush_timeout_ms: int = 250,
    export_cooloff_ms: int = 30_000,
    max_queue_size: int = 2048,
) -> InMemorySender:
    """Set up tracing whose per-invocation flush delivers to the returned sender."""
    setup.setup_tracing(service_name=service_name, exporter="none")
    rt = setup.runtime()
    assert rt is not None and isinstance(rt.provider, TracerProvider)
    sender = InMemorySender()
    processor = InvocationSpanProcessor(
        sender,
        timeout_ms=flush_timeout_ms,
        max_cooloff_ms=export_cooloff_ms,
        max_queue_size=max_queue_size,
    )
    rt.provider.add_span_processor(processor)
    rt.processor = processor
    rt.flush = processor.flush
    return sender


def reset_tracing() -> None:
    """Uninstall tracing and forget the cold start, as in a new execution environment."""
    setup.shutdown_tracing()
    coldstart.reset()
    # Let the next setup_tracing() install its provider as the global one again.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
