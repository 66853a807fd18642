"""``traced``: spans around your own code, sync or async, as decorator or context manager."""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util import types

from tracing import coldstart, names, runtime

__all__ = [
    "SpanScope",
    "current_span",
    "error_message",
    "error_type",
    "get_tracer",
    "record_error",
    "traced",
]

F = TypeVar("F", bound=Callable[..., Any])


def get_tracer() -> trace.Tracer:
    """The toolkit's tracer: the one :func:`tracing.setup_tracing` made, else the global one."""
    rt = runtime.current()
    if rt is not None:
        return rt.tracer
    return trace.get_tracer(runtime.NAME, runtime.VERSION)


def current_span() -> trace.Span:
    """The span code runs in now: an init phase during init, else OTel's current span."""
    phase = coldstart.current_phase()
    if phase is not None:
        return phase
    return trace.get_current_span()


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its class, qualified by module unless built in."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_message(exc: BaseException) -> str:
    """What a span or log line may say of ``exc``.

    A database error (one with a ``sqlstate``) is described by its class,
    SQLSTATE and constraint only: the server's message and ``DETAIL`` can
    quote the values of the row.  Any other exception by ``str(exc)``; an
    exception whose ``__str__`` itself fails by its class alone.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        text = f"{type(exc).__name__}: SQLSTATE {sqlstate}"
        constraint = _constraint(exc)
        if constraint:
            text += f" (constraint {constraint})"
        return text
    try:
        return f"{type(exc).__name__}: {exc}"
    except BaseException:  # __str__ raised: the handler's own exception must still pass
        return f"{type(exc).__name__}: <message unavailable>"


def _constraint(exc: BaseException) -> str | None:
    try:
        name = exc.diag.constraint_name  # type: ignore[attr-defined]
    except Exception:
        return None
    return name if isinstance(name, str) and name else None


def record_error(span: trace.Span, exc: BaseException, *, record_exception: bool = True) -> None:
    """Mark ``span`` as failed by ``exc``: error status, ``error.type``, an exception event.

    The message is :func:`error_message` (no database DETAIL); the stack trace
    lists frames only.  Never raises, whatever ``exc`` does.
    """
    try:
        message = error_message(exc)
        span.set_attribute(names.ERROR_TYPE, error_type(exc))
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            span.set_attribute(names.DB_RESPONSE_STATUS_CODE, sqlstate)
            constraint = _constraint(exc)
            if constraint:
                span.set_attribute(names.DB_ERROR_CONSTRAINT, constraint)
        if record_exception:
            span.add_event(
                "exception",
                {
                    names.EXCEPTION_TYPE: error_type(exc),
                    names.EXCEPTION_MESSAGE: message.partition(": ")[2],
                    names.EXCEPTION_STACKTRACE: _frames(exc),
                    names.EXCEPTION_ESCAPED: True,
                },
            )
        span.set_status(Status(StatusCode.ERROR, message))
    except Exception as err:
        runtime.logger.debug("tracing: could not record an error on a span: %s", err)


def _frames(exc: BaseException) -> str:
    """The traceback's frames, without the exception's message (which may quote data)."""
    try:
        frames = "".join(traceback.format_tb(exc.__traceback__))
    except Exception:
        return ""
    return f"Traceback (most recent call last):\n{frames}{error_type(exc)}"


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
        try:
            span.end()
        finally:
            if self._token is not None:
                otel_context.detach(self._token)  # type: ignore[arg-type]


#: The blocks opened by ``with traced(...)`` in this thread or task, innermost last.
_open_blocks: ContextVar[tuple[tuple[int, SpanScope], ...]] = ContextVar(
    "tracing_open_blocks", default=()
)


class _Traced:
    """What :func:`traced` returns when not given a function: decorator and context manager.

    It keeps no per-call state: the blocks it opened live in a context variable,
    so one instance can be entered by several threads or asyncio tasks at once.
    """

    __slots__ = ("_attributes", "_block_attributes", "_kind", "_name", "_record_exception")

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
        # Built once: a block entered per invocation reuses them.
        self._block_attributes = self._attributes_of(name) if name is not None else None

    def _attributes_of(self, name: str) -> dict[str, types.AttributeValue]:
        return {
            names.DD_OPERATION_NAME: name,
            names.DD_RESOURCE_NAME: name,
            **self._attributes,
        }

    def __call__(self, function: F) -> F:
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
            raise TypeError(
                f"traced() cannot wrap the generator function {function.__qualname__}: a span "
                "would end before the iteration; use `with traced(...)` inside it instead"
            )
        name = self._name or function.__qualname__
        attributes = self._block_attributes or self._attributes_of(name)
        kind = self._kind
        record = self._record_exception
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                scope = SpanScope(name, kind, attributes, record_exception=record)
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
            scope = SpanScope(name, kind, attributes, record_exception=record)
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                scope.close(exc)
                raise
            scope.close()
            return result

        return wrapper  # type: ignore[return-value]

    def __enter__(self) -> trace.Span:
        if self._name is None or self._block_attributes is None:
            raise TypeError("traced() used as a context manager needs a span name")
        scope = SpanScope(
            self._name,
            self._kind,
            self._block_attributes,
            record_exception=self._record_exception,
        )
        _open_blocks.set((*_open_blocks.get(), (id(self), scope)))
        return scope.span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        blocks = _open_blocks.get()
        me = id(self)
        for i in range(len(blocks) - 1, -1, -1):
            if blocks[i][0] == me:
                _open_blocks.set(blocks[:i] + blocks[i + 1 :])
                blocks[i][1].close(exc_val)
                return

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
    and as ``async with``; one ``traced("x")`` object may be entered by several
    threads or tasks at once.  Generator functions are refused with a
    ``TypeError`` (a span would end before the iteration): open a block inside
    them instead.  Exceptions are recorded on the span (error status) and
    re-raised unchanged.  During init the block is recorded as a cold-start
    phase (see :mod:`tracing.coldstart`).  Datadog's operation and resource
    names are set to the span name so that both exporters show the same names.
    """
    if callable(name_or_function):
        return _Traced(name, kind, attributes, record_exception)(name_or_function)
    return _Traced(name_or_function or name, kind, attributes, record_exception)
