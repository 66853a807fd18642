"""``traced_handler``: one SERVER span per invocation, delivered before the handler returns.

For Function URL and API Gateway HTTP API (payload 2.0) events the span is
named ``"{METHOD} {route}"`` and carries the OpenTelemetry ``faas.*``,
``http.*``, ``url.*`` and ``cloud.*`` attributes; other events get a span
named after the function with ``faas.trigger=other``.  The route is the API
Gateway route key, or the first of ``routes`` that matches the path
(``"/todos/{id}"``); unmatched paths get no route, so 404 probes cannot
explode the number of resources.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util import types

from tracing import coldstart, names, propagation, setup
from tracing.deadline import DeadlineWatch
from tracing.spans import record_error

logger = logging.getLogger("tracing")

H = TypeVar("H", bound=Callable[[Any, Any], Any])


class RouteTable:
    """Matches request paths against route templates such as ``/todos/{id}``."""

    def __init__(self, routes: Iterable[str]) -> None:
        self._exact: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for route in routes:
            if "{" in route:
                regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(route))
                self._patterns.append((re.compile(regex + "/?"), route))
            else:
                self._exact[route.rstrip("/") or "/"] = route

    def match(self, path: str) -> str | None:
        """The template ``path`` matches, or None."""
        route = self._exact.get(path.rstrip("/") or "/")
        if route is not None:
            return route
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return None


@overload
def traced_handler(handler: H, /) -> H: ...


@overload
def traced_handler(*, routes: Iterable[str] = ()) -> Callable[[H], H]: ...


def traced_handler(
    handler: H | None = None, /, *, routes: Iterable[str] = ()
) -> H | Callable[[H], H]:
    """Wrap a Lambda handler: ``@traced_handler`` or ``@traced_handler(routes=[...])``.

    Calls :func:`tracing.setup_tracing` with its defaults if it was not called.
    The handler's exceptions are recorded on the span and re-raised unchanged;
    a failure inside the toolkit is logged and never reaches the handler.
    """
    table = RouteTable(routes)

    def decorate(fn: H) -> H:
        setup.setup_tracing()
        coldstart.mark_ready()

        @functools.wraps(fn)
        def wrapper(event: Any, context: Any) -> Any:
            invocation = _start(event, context, table)
            if invocation is None:
                return fn(event, context)
            try:
                result = fn(event, context)
            except BaseException as exc:
                _finish(invocation, None, exc)
                raise
            _finish(invocation, result, None)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate(handler) if handler is not None else decorate


class _Invocation:
    __slots__ = ("done", "lock", "rt", "span", "token")

    def __init__(self, rt: setup.Runtime, span: trace.Span, token: object) -> None:
        self.rt = rt
        self.span = span
        self.token = token
        self.done = False
        self.lock = threading.Lock()


#: Ends the current invocation's span just before Lambda's deadline.
_watch = DeadlineWatch()


def _impending_timeout(invocation: _Invocation, margin_s: float) -> None:
    """Runs on the watcher thread when the invocation is about to be stopped."""
    with invocation.lock:
        if invocation.done:
            return
        invocation.done = True
    span = invocation.span
    span.set_attribute(names.ERROR_TYPE, "timeout")
    span.set_status(
        Status(StatusCode.ERROR, "impending timeout: the invocation reached its deadline")
    )
    span.end()
    invocation.rt.flush_within(margin_s * 0.8)


def _start(event: Any, context: Any, table: RouteTable) -> _Invocation | None:
    rt = setup.runtime()
    if rt is None or rt.config.disabled:
        return None
    try:
        now = time.time_ns()
        first = coldstart.begin_invocation(now)
        name, attributes, headers = _describe(event, context, table)
        attributes[names.FAAS_COLDSTART] = bool(first and first.coldstart)
        if first is not None and not first.coldstart:
            attributes[names.INIT_TYPE] = first.initialization_type
            attributes[names.PROACTIVE_INIT] = first.proactive
        span = rt.tracer.start_span(
            name,
            context=propagation.extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=now,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        invocation = _Invocation(rt, span, token)
        margin = rt.config.timeout_margin_ms / 1000.0
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if margin > 0 and remaining is not None:
            deadline = time.monotonic() + remaining() / 1000.0 - margin
            _watch.arm(deadline, lambda: _impending_timeout(invocation, margin))
        if first is not None:
            function = str(
                getattr(context, "function_name", "") or attributes.get(names.DD_RESOURCE_NAME)
            )
            coldstart.replay(rt.tracer, span if first.coldstart else None, function)
        return invocation
    except Exception as exc:
        logger.warning("tracing: could not start the invocation span: %s", exc)
        return None


def _finish(invocation: _Invocation, result: Any, exc: BaseException | None) -> None:
    _watch.disarm()
    with invocation.lock:
        ended_by_watch = invocation.done
        invocation.done = True
    if ended_by_watch:  # the deadline watcher ended and sent it already
        otel_context.detach(invocation.token)  # type: ignore[arg-type]
        return
    try:
        span = invocation.span
        if exc is not None:
            record_error(span, exc)
        elif span.is_recording():
            status = _status_code(result)
            if status is not None:
                span.set_attribute(names.HTTP_RESPONSE_STATUS_CODE, status)
                if status >= 500:
                    span.set_attribute(names.ERROR_TYPE, str(status))
                    span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(invocation.token)  # type: ignore[arg-type]
    except Exception as err:
        logger.warning("tracing: could not end the invocation span: %s", err)
    try:
        invocation.rt.flush()
    except Exception as err:
        logger.warning("tracing: flush failed: %s", err)


def _status_code(result: Any) -> int | None:
    """The HTTP status a Function URL answers with: ``statusCode``, else 200 (the result
    is then the JSON body); None for a ``statusCode`` that is not a number."""
    code = result.get("statusCode") if isinstance(result, Mapping) else None
    if code is None:
        return 200
    try:
        return int(code)
    except (TypeError, ValueError):
        return None


def _describe(
    event: Any, context: Any, table: RouteTable
) -> tuple[str, dict[str, types.AttributeValue], Mapping[str, str] | None]:
    """Span name, attributes and headers of an invocation."""
    attrs: dict[str, types.AttributeValue] = {names.DD_OPERATION_NAME: names.LAMBDA_INVOCATION}
    request_id = getattr(context, "aws_request_id", None)
    if request_id:
        attrs[names.FAAS_INVOCATION_ID] = request_id
    arn = getattr(context, "invoked_function_arn", None)
    if isinstance(arn, str) and arn:
        attrs[names.CLOUD_RESOURCE_ID] = arn
        parts = arn.split(":")
        if len(parts) > 4 and parts[4]:
            attrs[names.CLOUD_ACCOUNT_ID] = parts[4]
    function = str(getattr(context, "function_name", "") or "handler")
    http = event.get("requestContext", {}).get("http") if isinstance(event, Mapping) else None
    if not isinstance(http, Mapping):
        attrs[names.FAAS_TRIGGER] = "other"
        attrs[names.DD_RESOURCE_NAME] = function
        return function, attrs, None
    headers = event.get("headers")
    headers = headers if isinstance(headers, Mapping) else {}
    method = str(http.get("method") or "GET").upper()
    path = str(http.get("path") or event.get("rawPath") or "/")
    route_key = event.get("routeKey")
    route: str | None = None
    if isinstance(route_key, str) and " " in route_key:
        route = route_key.split(" ", 1)[1]
    if route is None or route == "$default":
        route = table.match(path)
    name = f"{method} {route}" if route else method
    attrs.update(
        {
            names.FAAS_TRIGGER: "http",
            names.HTTP_REQUEST_METHOD: method,
            names.URL_PATH: path,
            names.DD_RESOURCE_NAME: name,
            names.DD_SPAN_TYPE: "serverless",
        }
    )
    if route:
        attrs[names.HTTP_ROUTE] = route
    agent = http.get("userAgent") or headers.get("user-agent")
    if agent:
        attrs[names.USER_AGENT_ORIGINAL] = str(agent)
    source = http.get("sourceIp")
    if source:
        attrs[names.CLIENT_ADDRESS] = str(source)
    return name, attrs, headers
