"""Process-wide state: one :class:`Runtime`, the toolkit's name and version, the global provider.

:func:`tracing.setup_tracing` builds a :class:`Runtime` and installs it here;
everything else (the handler wrapper, :func:`tracing.traced`, the exporters)
reads it through :func:`current`.  Nothing here imports an exporter, so the
exporters can import this module without a cycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from opentelemetry import trace

if TYPE_CHECKING:
    from tracing.config import TracingConfig
    from tracing.deadline import DeadlineWatch
    from tracing.delivery import DeliveryMode

__all__ = [
    "NAME",
    "VERSION",
    "Delivery",
    "NoDelivery",
    "Runtime",
    "current",
    "install",
    "logger",
    "set_global_provider",
    "uninstall",
]

#: The distribution, the instrumentation scope and the logger: one name.
NAME = "dsql-lambda-tracing"
#: The toolkit's version; ``pyproject.toml`` reads it from here (one place), and the
#: package metadata therefore carries the same one.  Reading the metadata at run time
#: instead would cost 25-40 ms of ``importlib.metadata`` at every cold start.
VERSION = "0.2.0"

#: The toolkit's logger.
logger = logging.getLogger(NAME)


class Delivery(Protocol):
    """How finished spans leave the process; both exporters implement it."""

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what is pending within ``timeout`` seconds (None: the configured
        flush timeout); True when nothing is left undelivered."""
        ...

    def shutdown(self) -> None:
        """Deliver what is pending and release the connection."""
        ...


class NoDelivery:
    """Delivery when tracing is off or the exporter is ``none``: nothing to send."""

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self) -> None:
        pass


@dataclass
class Runtime:
    """What :func:`tracing.setup_tracing` made: the tracer, how its spans are delivered
    (``delivery``) and when (``mode``), and the watcher that ends an invocation's span
    before Lambda's deadline where the mode does not."""

    config: TracingConfig
    tracer: trace.Tracer
    delivery: Delivery = field(default_factory=NoDelivery)
    provider: trace.TracerProvider | None = None
    watch: DeadlineWatch | None = None
    mode: DeliveryMode | None = None
    #: How many handlers ``traced_handler`` wrapped with this runtime.
    wrapped_handlers: int = 0

    def close(self) -> None:
        """Deliver what is pending, release the connection, stop the watcher and the mode."""
        if self.mode is not None:
            self.mode.close()
        if self.watch is not None:
            self.watch.stop()
        self.delivery.shutdown()


_current: Runtime | None = None


def current() -> Runtime | None:
    """The installed runtime, or None before :func:`tracing.setup_tracing`."""
    return _current


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the process's runtime."""
    global _current
    _current = runtime


def uninstall() -> Runtime | None:
    """Forget the installed runtime and return it (the caller closes it)."""
    global _current
    runtime, _current = _current, None
    return runtime


def set_global_provider(provider: trace.TracerProvider) -> None:
    """Make ``provider`` the global one so that raw OpenTelemetry API calls use it too."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    else:
        logger.info("tracing: a global TracerProvider exists already; leaving it in place")
