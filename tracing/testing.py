"""Helpers for tests of code that uses the toolkit: capture spans in memory, reset state.

>>> from tracing.testing import capture_spans, reset_tracing
>>> sink = capture_spans()          # setup_tracing() delivering to memory
>>> ...                             # invoke your handler
>>> [s.name for s in sink.spans]    # what the flushes delivered
>>> reset_tracing()                 # as if the process were new
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util._once import Once

from tracing import coldstart, runtime, setup
from tracing.config import TracingConfig
from tracing.deadline import DeadlineWatch

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["InMemorySender", "capture_spans", "delivery", "make_runtime", "reset_tracing"]


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


def capture_spans(config: TracingConfig | None = None) -> InMemorySender:
    """Set up tracing (``config``, default service ``test``) delivering to the returned sender."""
    sender = InMemorySender()
    setup.setup_tracing(config or TracingConfig(service_name="test"), sender=sender)
    return sender


def make_runtime(
    sender: InMemorySender,
    config: TracingConfig | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> runtime.Runtime:
    """A runtime of its own (not installed) delivering to ``sender``, its pauses timed by
    ``clock``; pass it to ``traced_handler(runtime=...)``."""
    config = config or TracingConfig(service_name="test")
    provider = setup.make_provider(config)
    processor = setup.make_processor(config, sender, clock=clock)
    provider.add_span_processor(processor)
    from tracing.delivery import Inline

    return runtime.Runtime(
        config,
        provider.get_tracer(runtime.NAME, runtime.VERSION),
        processor,
        provider=provider,
        watch=DeadlineWatch() if config.timeout_margin_ms > 0 else None,
        mode=Inline(processor),
    )


def delivery() -> runtime.Delivery:
    """The installed runtime's delivery (its ``backoff`` and ``stats`` for assertions)."""
    rt = runtime.current()
    assert rt is not None, "setup_tracing() was not called"
    return rt.delivery


def reset_tracing() -> None:
    """Uninstall tracing and forget all process state, as in a new execution environment:
    the runtime and its deadline watcher, the cold start, the encoder and query caches,
    log correlation, and the global tracer provider."""
    setup.shutdown_tracing()
    coldstart.reset()
    import sys

    for module in ("tracing.otlp", "tracing.db", "tracing.handler"):
        loaded = sys.modules.get(module)
        if loaded is not None:
            loaded.reset_caches()
    # OpenTelemetry has no public way back to "no provider set"; these are its globals.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
