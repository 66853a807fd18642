"""``traced``: spans around your own code, sync or async, as decorator or context manager."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util import types

from tracing import coldstart, names

F = TypeVar("F", bound=Callable[..., Any])

_FALLBACK_TRACER: trace.Tracer | None = None
_tracer: trace.Tracer | None = None


def set_tracer(tracer: trace.Tracer | None) -> None:
    """Make ``tracer`` the one every toolkit span is started with (None: the global one)."""
    global _tracer
    _tracer = tracer


def get_tracer() -> trace.Tracer:
    """The toolkit's tracer: the one :func:`tracing.setup_tracing` made, else the global one."""
    global _FALLBACK_TRACER
    if _tracer is not None:
        return _tracer
    if _FALLBACK_TRACER is None:
        _FALLBACK_TRACER = trace.get_tracer("tracing")
    return _FALLBACK_TRACER


def current_span() -> trace.Span:
    """The span code runs in now: an init phase during init, else OTel's current span."""
    phase = coldstart._current.get()
    if phase is not None and coldstart.recording():
        return phase
    return trace.get_current_span()


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its class, qualified by module unless built in."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def record_error(span: trace.Span, exc: BaseException, *, record_exception: bool = True) -> None:
    """Mark ``span`` as failed by ``exc``: error status, ``error.type``, exception event."""
    if record_exception:
        span.record_exception(exc, escaped=True)
    kind = error_type(exc)
    span.set_attribute(names.ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


class SpanScope:
    """An open span made current; :meth:`close` ends it and restores the previous one."""

    __slots__ = ("_phase_token", "_record_exception", "_token", "span")

    def __init__(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, types.AttributeValue] | None = None,
        *,
        record_exception: bool = True,
    ) -> None:
        self._record_exception = record_exception
        self._token: object | None = None
        self._phase_token: object | None = None
        self.span: trace.Span
        if coldstart.recording():
            phase, self._phase_token = coldstart.start_phase(name, kind, attributes)
            self.span = phase
            return
        self.span = get_tracer().start_span(name, kind=kind, attributes=attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def close(self, exc: BaseException | None = None) -> None:
        """End the span, recording ``exc`` (if any) as an error."""
        span = self.span
        if exc is not None:
            record_error(span, exc, record_exception=self._record_exception)
        if self._phase_token is not None:
            coldstart.end_phase(span, self._phase_token)  # type: ignore[arg-type]
            return
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]


class _Traced:
    """What :func:`traced` returns when not given a function: decorator and context manager."""

    __slots__ = ("_attributes", "_kind", "_name", "_named", "_record_exception", "_scopes")

    def __init__(
        self,
        name: str | None,
        kind: SpanKind,
        attributes: Mapping[str, types.AttributeValue] | None,
        record_exception: bool,
    ) -> None:
        self._name = name
        self._kind = kind
        self._record_exception = record_exception
        self._attributes = dict(attributes or {})
        self._scopes: list[SpanScope] = []
        self._named: tuple[str, dict[str, types.AttributeValue]] | None = None

    def _open(self, name: str) -> SpanScope:
        named = self._named
        if named is None or named[0] != name:
            attributes: dict[str, types.AttributeValue] = {
                names.DD_OPERATION_NAME: name,
                names.DD_RESOURCE_NAME: name,
                **self._attributes,
            }
            named = self._named = (name, attributes)
        return SpanScope(name, self._kind, named[1], record_exception=self._record_exception)

    def __call__(self, function: F) -> F:
        name = self._name or function.__qualname__
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                scope = self._open(name)
                try:
                    result = await function(*args, **kwargs)
                except BaseException as exc:
                    scope.close(exc)
                    raise
                scope.close()
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            scope = self._open(name)
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                scope.close(exc)
                raise
            scope.close()
            return result

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> trace.Span:
        if self._name is None:
            raise TypeError("traced() used as a context manager needs a span name")
        scope = self._open(self._name)
        self._scopes.append(scope)
        return scope.span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._scopes.pop().close(exc_val)

    async def __aenter__(self) -> trace.Span:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc_val, exc_tb)


@overload
def traced(name_or_function: F, /) -> F: ...


@overload
def traced(
    name_or_function: str | None = None,
    /,
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, types.AttributeValue] | None = None,
    record_exception: bool = True,
) -> _Traced: ...


def traced(
    name_or_function: str | Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, types.AttributeValue] | None = None,
    record_exception: bool = True,
) -> Any:
    """Trace a function or a block.

    ``@traced`` (span named after the function), ``@traced("Save Todo")``,
    ``@traced(name="x", kind=SpanKind.CLIENT, attributes={...})`` or
    ``with traced("Save Todo") as span:``.  Works on ``async def`` functions
    and as ``async with``.  Exceptions are recorded on the span (error status)
    and re-raised unchanged.  During init the block is recorded as a cold-start
    phase (see :mod:`tracing.coldstart`).  Datadog's operation and resource
    names are set to the span name so that both exporters show the same names.
    """
    if callable(name_or_function):
        return _Traced(name, kind, attributes, record_exception)(name_or_function)
    return _Traced(name_or_function or name, kind, attributes, record_exception)
