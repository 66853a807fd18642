"""A lean OpenTelemetry tracer: the API's provider, tracer and span, without the SDK.

:func:`tracing.setup_tracing` installs :class:`TracerProvider` as the process's
provider (and as the global one, so other instrumentations' spans use it
too).  Each span is its own export record: the OTLP encoder, the X-Ray and
``stdout-otlp`` senders read it as they read an SDK ``ReadableSpan``.  Not
importing the SDK takes its import (25-40 ms) off the cold start, and a span
costs about a third of the SDK's CPU.  It behaves as the SDK's provider with
the same settings (``tests/test_tracer.py`` checks it against the SDK):

- ids: random 128-bit trace ids and 64-bit span ids, from the generator under
  :mod:`random` (``_random.Random``, seeded from the OS: importing ``random``
  itself costs about 2 ms of a cold start), as the SDK's ``RandomIdGenerator``
  draws them; :func:`reseed` after a SnapStart restore; trace flags carry
  ``RANDOM_TRACE_ID`` as the SDK sets them;
- sampling: the SDK's ``always_on``, ``always_off``, ``traceidratio`` and
  their ``parentbased_`` forms (the parent's trace state is kept);
- limits: the SDK's span limits, from the same environment variables;
  attribute values are checked and cleaned as the SDK does; the oldest
  attribute goes when a span is full, the oldest event or link when their
  list is;
- an ended span changes no more (a warning), ``end`` twice ends once.

With span processors of your own (``setup_tracing(processors=...)``), which
expect the SDK's spans, the SDK's provider is used instead.

Environment variables (the SDK's; set but empty means no limit; a value that
is not a non-negative integer is ignored with a warning, where the SDK would
raise):

- ``OTEL_ATTRIBUTE_COUNT_LIMIT``: attributes per span, event and link (128).
- ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``: attributes per span (the above).
- ``OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT``, ``OTEL_LINK_ATTRIBUTE_COUNT_LIMIT``:
  attributes per event and per link (the above).
- ``OTEL_SPAN_EVENT_COUNT_LIMIT``, ``OTEL_SPAN_LINK_COUNT_LIMIT``: events and
  links per span (128 each).
- ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``: the longest string value (no limit).
- ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``: the same for span attributes.
"""

from __future__ import annotations

import _random
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

__all__ = [
    "Event",
    "InstrumentationScope",
    "Resource",
    "Span",
    "SpanLimits",
    "Tracer",
    "TracerProvider",
    "reseed",
]

_logger = logging.getLogger(__name__)

#: Values the hot path stores as they are (the SDK stores them unchanged too).
_PLAIN = frozenset((str, bool, int, float))
_SAMPLED = TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID)
_NOT_SAMPLED = TraceFlags(TraceFlags.RANDOM_TRACE_ID)
_SAMPLED_ONLY = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED_ONLY = TraceFlags(TraceFlags.DEFAULT)
_TRACE_ID_LIMIT = (1 << 64) - 1
_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: Where trace and span ids come from (the Mersenne Twister ``random`` uses).
_ids = _random.Random()
_bits = _ids.getrandbits


def reseed() -> None:
    """Seed the id generator from the OS again (copies of one SnapStart snapshot would
    otherwise draw the same ids)."""
    _ids.seed(None)


def _limit(name: str, default: int | None, environ: Mapping[str, str]) -> int | None:
    raw = environ.get(name)
    if raw is None:
        return default
    text = raw.strip().lower()
    if not text:  # set but empty: no limit, as the SDK reads it
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    _logger.warning("%s must be a non-negative integer, got %r; using %s", name, raw, default)
    return default


class SpanLimits:
    """How much one span keeps: the SDK's limits (None: no limit), by default from its
    environment variables (:meth:`from_environ`)."""

    __slots__ = (
        "max_attribute_length",
        "max_event_attributes",
        "max_events",
        "max_link_attributes",
        "max_links",
        "max_span_attribute_length",
        "max_span_attributes",
    )

    def __init__(
        self,
        *,
        max_span_attributes: int | None = 128,
        max_events: int | None = 128,
        max_links: int | None = 128,
        max_event_attributes: int | None = 128,
        max_link_attributes: int | None = 128,
        max_attribute_length: int | None = None,
        max_span_attribute_length: int | None = None,
    ) -> None:
        self.max_span_attributes = max_span_attributes
        self.max_events = max_events
        self.max_links = max_links
        self.max_event_attributes = max_event_attributes
        self.max_link_attributes = max_link_attributes
        self.max_attribute_length = max_attribute_length
        self.max_span_attribute_length = max_span_attribute_length

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SpanLimits:
        """The limits the SDK would read from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        overall = _limit("OTEL_ATTRIBUTE_COUNT_LIMIT", None, env)
        count = 128 if overall is None else overall
        length = _limit("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None, env)
        return cls(
            max_span_attributes=_limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", count, env),
            max_events=_limit("OTEL_SPAN_EVENT_COUNT_LIMIT", 128, env),
            max_links=_limit("OTEL_SPAN_LINK_COUNT_LIMIT", 128, env),
            max_event_attributes=_limit("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", count, env),
            max_link_attributes=_limit("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", count, env),
            max_attribute_length=length,
            max_span_attribute_length=_limit("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", length, env),
        )


class Resource:
    """The entity that produces the spans: its attributes (cleaned as the SDK does)."""

    __slots__ = ("attributes", "schema_url")

    def __init__(self, attributes: types.Attributes, schema_url: str = "") -> None:
        self.attributes: Mapping[str, Any] = MappingProxyType(
            dict(BoundedAttributes(attributes=attributes))
        )
        self.schema_url = schema_url


class InstrumentationScope:
    """The library a tracer was asked for by (``get_tracer``'s arguments)."""

    __slots__ = ("attributes", "name", "schema_url", "version")

    def __init__(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> None:
        self.name = name
        self.version = version
        self.schema_url = schema_url or ""
        self.attributes: Mapping[str, Any] = (
            MappingProxyType(dict(BoundedAttributes(attributes=attributes)))
            if attributes
            else _EMPTY
        )


class Event:
    """A timestamped event of a span (``add_event``, ``record_exception``)."""

    __slots__ = ("attributes", "dropped_attributes", "name", "timestamp")

    def __init__(self, name: str, attributes: BoundedAttributes, timestamp: int) -> None:
        self.name = name
        self.attributes = attributes
        self.dropped_attributes = attributes.dropped
        self.timestamp = timestamp


class _Sampling:
    """The SDK's standard samplers, as one decision per span."""

    __slots__ = ("bound", "parent_based")

    def __init__(self, name: str, ratio: float) -> None:
        self.parent_based = name.startswith("parentbased_")
        kind = name.removeprefix("parentbased_")
        if kind == "always_on":
            self.bound = _TRACE_ID_LIMIT + 1
        elif kind == "always_off":
            self.bound = 0
        else:  # traceidratio, as TraceIdRatioBased.get_bound_for_rate
            self.bound = round(min(max(ratio, 0.0), 1.0) * (_TRACE_ID_LIMIT + 1))

    def sampled(self, parent: SpanContext | None, trace_id: int) -> bool:
        if parent is not None and self.parent_based:
            return parent.trace_flags.sampled
        return trace_id & _TRACE_ID_LIMIT < self.bound


class TracerProvider(trace.TracerProvider):
    """Makes :class:`Tracer` objects whose spans go to the processors added here."""

    def __init__(
        self,
        *,
        resource: Resource,
        sampler: str = "parentbased_always_on",
        sampler_ratio: float = 1.0,
        limits: SpanLimits | None = None,
    ) -> None:
        self.resource = resource
        self.limits = limits or SpanLimits.from_environ()
        self._sampling = _Sampling(sampler, sampler_ratio)
        self._processors: list[Any] = []
        self._ends: tuple[Callable[[Span], None], ...] = ()
        self._starts: tuple[Callable[..., None], ...] = ()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> Tracer:
        if not instrumenting_module_name:
            _logger.warning("get_tracer called with a missing module name")
            instrumenting_module_name = ""
        scope = InstrumentationScope(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return Tracer(self, scope)

    def add_span_processor(self, processor: Any) -> None:
        """Have ``processor``'s ``on_end`` (and ``on_start``, if it does something) called."""
        self._processors.append(processor)
        self._ends = tuple(p.on_end for p in self._processors)
        self._starts = tuple(
            p.on_start for p in self._processors if getattr(p, "uses_on_start", True)
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush every processor (each, even after one failed); True when all succeeded."""
        return all([p.force_flush(timeout_millis) for p in self._processors])

    def shutdown(self) -> None:
        """Shut every processor down."""
        for processor in self._processors:
            processor.shutdown()


class Tracer(trace.Tracer):
    """Starts spans of one instrumentation scope."""

    def __init__(self, provider: TracerProvider, scope: InstrumentationScope) -> None:
        self._provider = provider
        self.instrumentation_scope = scope

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        current = (context if context is not None else otel_context.get_current()).get(_SPAN_KEY)
        parent: SpanContext | None
        if type(current) is Span:  # the usual parent: no ABC check
            parent = current.context
        elif current is None:
            parent = None
        else:
            parent = current.get_span_context() if isinstance(current, trace.Span) else None
        if (
            parent is not None
            and type(parent) is not SpanContext
            and not isinstance(parent, SpanContext)
        ):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        provider = self._provider
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = _bits(128) or _nonzero(128)
            random_id = True
            trace_state = None
        else:
            trace_id = parent.trace_id
            random_id = parent.trace_flags.random_trace_id
            trace_state = parent.trace_state
        sampled = provider._sampling.sampled(parent, trace_id)
        if random_id:
            flags = _SAMPLED if sampled else _NOT_SAMPLED
        else:
            flags = _SAMPLED_ONLY if sampled else _NOT_SAMPLED_ONLY
        span_context = SpanContext(
            trace_id,
            _bits(64) or _nonzero(64),
            False,
            flags,
            trace_state,
        )
        if not sampled:
            return NonRecordingSpan(span_context)
        span = Span(
            name,
            span_context,
            parent,
            kind,
            attributes,
            links,
            provider,
            self.instrumentation_scope,
            start_time if start_time is not None else time.time_ns(),
            record_exception,
            set_status_on_exception,
        )
        for on_start in provider._starts:
            on_start(span, context)
        return span

    @_agnosticcontextmanager  # as the SDK's: a context manager and a decorator
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


def _nonzero(bits: int) -> int:
    """Random ``bits`` bits, drawn again while zero (an invalid id)."""
    value = 0
    while not value:
        value = _bits(bits)
    return value


class Span(trace.Span):
    """A span that records until it ends, then goes to the provider's processors.

    It reads as an SDK ``ReadableSpan`` (``name``, ``context``, ``parent``,
    ``attributes``, ``events``, ``links``, ``status``, ``start_time``,
    ``end_time``, ``resource``, ``instrumentation_scope`` and the ``dropped_*``
    counts); :meth:`readable` makes a real one where one is needed.
    """

    __slots__ = (
        "_provider",
        "_record_exception",
        "_set_status_on_exception",
        "attributes",
        "context",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_time",
        "events",
        "instrumentation_scope",
        "kind",
        "links",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link] | None,
        provider: TracerProvider,
        scope: InstrumentationScope,
        start_time: int,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.resource = provider.resource
        self.instrumentation_scope = scope
        self.start_time = start_time
        self.end_time: int | None = None
        self.status = _UNSET
        #: Empty tuples until the first event or link: two lists fewer per span.
        self.events: list[Event] | tuple[()] = ()
        self.dropped_events = 0
        self.dropped_attributes = 0
        self._provider = provider
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self.attributes: dict[str, Any] = {}
        if attributes:
            self._put_all(attributes)
        self.links: list[Link] | tuple[()] = ()
        self.dropped_links = 0
        if links:
            self._new_links(links)

    # -- attributes ------------------------------------------------------------------

    def _put(self, key: str, value: Any) -> None:
        """Store a checked value, evicting the oldest attribute when the span is full."""
        attributes = self.attributes
        most = self._provider.limits.max_span_attributes
        if key in attributes:
            del attributes[key]
        elif most is not None and len(attributes) >= most:
            if most == 0:
                self.dropped_attributes += 1
                return
            if not self.dropped_attributes:  # once per span: hostile input floods no log
                _logger.warning("Attributes dict is full. Dropping the oldest key-value pair.")
            del attributes[next(iter(attributes))]
            self.dropped_attributes += 1
        attributes[key] = value

    def _clean(self, value: Any) -> Any:
        longest = self._provider.limits.max_span_attribute_length
        if type(value) in _PLAIN and (longest is None or type(value) is not str):
            return value
        if type(value) is str and len(value) <= longest:  # type: ignore[operator]
            return value
        cleaned = BoundedAttributes(None, {"v": value}, max_value_len=longest)
        return cleaned["v"]

    def _put_all(self, attributes: Mapping[str, Any]) -> None:
        limits = self._provider.limits
        longest = limits.max_span_attribute_length
        if not self.attributes and longest is None:
            most = limits.max_span_attributes
            if most is None or len(attributes) <= most:
                for key, value in attributes.items():
                    if type(key) is not str or not key or type(value) not in _PLAIN:
                        break
                else:  # the usual case: a new span's plain attributes, within the limit
                    self.attributes = dict(attributes)
                    return
        for key, value in attributes.items():
            if type(key) is str and key and type(value) in _PLAIN and longest is None:
                self._put(key, value)
                continue
            cleaned = BoundedAttributes(None, {key: value}, max_value_len=longest)
            if not cleaned:
                self.dropped_attributes += 1
            for clean_key, clean_value in cleaned.items():
                self._put(clean_key, clean_value)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self.end_time is not None:
            _logger.warning("Setting attribute on ended span.")
            return
        if not key or type(key) is not str:
            _logger.warning("invalid key `%s`. must be non-empty string. Dropping key.", key)
            self.dropped_attributes += 1
            return
        self._put(key, self._clean(value))

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self.end_time is not None:
            _logger.warning("Setting attribute on ended span.")
            return
        self._put_all(attributes)

    # -- events and links ------------------------------------------------------------

    def _ended(self, what: str) -> bool:
        if self.end_time is None:
            return False
        _logger.warning("Tried calling %s on an ended span.", what)
        return True

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._ended("add_event"):
            return
        limits = self._provider.limits
        event = Event(
            name,
            BoundedAttributes(
                limits.max_event_attributes, attributes, max_value_len=limits.max_attribute_length
            ),
            timestamp if timestamp is not None else time.time_ns(),
        )
        events = self.events
        if not isinstance(events, list):
            events = self.events = []
        most = limits.max_events
        if most is not None and len(events) >= most:
            self.dropped_events += 1
            if most == 0:
                return
            del events[0]
        events.append(event)

    def _link(self, context: SpanContext, attributes: types.Attributes) -> None:
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        limits = self._provider.limits
        link = Link(
            context,
            BoundedAttributes(
                limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length
            ),
        )
        links = self.links
        if not isinstance(links, list):
            links = self.links = []
        most = limits.max_links
        if most is not None and len(links) >= most:
            self.dropped_links += 1
            if most == 0:
                return
            del links[0]
        links.append(link)

    def _new_links(self, links: Sequence[Link]) -> None:
        for link in links:
            if link:
                self._link(link.context, link.attributes)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._ended("add_link"):
            return
        self._link(context, attributes)

    # -- the rest of the API ---------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self.context

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self.name = name

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended("set_status"):
            return
        if self.status.status_code is StatusCode.OK:
            return  # OK is final
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                _logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self.status = status
        elif status is not StatusCode.UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        cls = type(exception)
        module = cls.__module__
        qualname = cls.__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            _logger.warning("Calling end() on an ended span.")
            return
        self.end_time = end_time if end_time is not None else time.time_ns()
        for on_end in self._provider._ends:
            on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.end_time is None:
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    # -- as an SDK span --------------------------------------------------------------

    def readable(self) -> Any:
        """This span as an SDK ``ReadableSpan`` (imports the SDK)."""
        from opentelemetry.sdk.resources import Resource as SdkResource
        from opentelemetry.sdk.trace import Event as SdkEvent
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope as SdkScope

        scope = self.instrumentation_scope
        return ReadableSpan(
            name=self.name,
            context=self.context,
            parent=self.parent,
            resource=SdkResource(dict(self.resource.attributes), self.resource.schema_url or None),
            attributes=self.attributes,
            events=[SdkEvent(e.name, e.attributes, e.timestamp) for e in self.events],
            links=self.links,
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=SdkScope(
                scope.name, scope.version, scope.schema_url or None, dict(scope.attributes)
            ),
        )

    def to_json(self, indent: int | None = 4) -> str:
        """The SDK's JSON form of this span."""
        return str(self.readable().to_json(indent=indent))

    def __repr__(self) -> str:
        return f'Span(name="{self.name}", context={self.context})'


_UNSET = Status(StatusCode.UNSET)
