"""``traced_handler``: one span per invocation, delivered as :mod:`tracing.delivery` says.

:mod:`tracing.triggers` reads the event: HTTP triggers (Function URL, API
Gateway REST and HTTP APIs, ALB) give a SERVER span ``"{METHOD} {route}"``
with the OpenTelemetry ``http.*`` and ``url.*`` attributes; SQS, SNS and
EventBridge a CONSUMER span ``"{destination} process"`` with ``messaging.*``
and links; schedules and anything else a SERVER span named after the
function (``faas.trigger`` ``timer`` or ``other``).  Every span carries the
``faas.*`` and ``cloud.*`` attributes.  The route is API Gateway's, or the
first of ``routes`` that matches the path (``"/todos/{id}"``); unmatched
paths get no route, so 404 probes cannot explode the number of resources.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Status, StatusCode

from tracing import coldstart, names, propagation, setup, triggers
from tracing.runtime import Runtime, logger
from tracing.runtime import current as current_runtime
from tracing.spans import record_error
from tracing.triggers import RouteTable, Trigger

__all__ = ["RouteTable", "reset_caches", "traced_handler"]

H = TypeVar("H", bound=Callable[[Any, Any], Any])

#: Lambda's longest timeout; a remaining time beyond it is not believed.
_MAX_REMAINING_MS = 900_000
#: Set on the wrapper, so that wrapping twice wraps once.
_WRAPPED = "__tracing_handler__"


@overload
def traced_handler(handler: H, /) -> H: ...


@overload
def traced_handler(
    *, routes: Iterable[str] = (), runtime: Runtime | None = None
) -> Callable[[H], H]: ...


def traced_handler(
    handler: H | None = None,
    /,
    *,
    routes: Iterable[str] = (),
    runtime: Runtime | None = None,
) -> H | Callable[[H], H]:
    """Wrap a Lambda handler: ``@traced_handler`` or ``@traced_handler(routes=[...])``.

    Calls :func:`tracing.setup_tracing` with its defaults if it was not called;
    ``runtime`` makes the wrapper use that runtime instead of the installed one.
    Whatever the event, the context or the handler's outcome, every invocation
    gets its span, and the handler's result or exception passes unchanged; a
    failure inside the toolkit is logged and never reaches the handler.  A
    handler wrapped already is returned as it is (one span per invocation).
    """
    table = RouteTable(routes)
    explicit = runtime

    def decorate(fn: H) -> H:
        if getattr(fn, _WRAPPED, False):
            return fn
        if explicit is None:
            setup.setup_tracing()
        rt = explicit or current_runtime()
        if rt is not None:
            rt.wrapped_handlers += 1  # the extension then waits for this handler's spans
        coldstart.mark_ready()

        @functools.wraps(fn)
        def wrapper(event: Any, context: Any) -> Any:
            invocation = _start(event, context, table, explicit)
            if invocation is None:
                return fn(event, context)
            try:
                result = fn(event, context)
            except BaseException as exc:
                _finish(invocation, None, exc)
                raise
            _finish(invocation, result, None)
            return result

        setattr(wrapper, _WRAPPED, True)
        return wrapper  # type: ignore[return-value]

    return decorate(handler) if handler is not None else decorate


class _Invocation:
    __slots__ = ("done", "lock", "request_id", "rt", "span", "token", "trigger")

    def __init__(
        self,
        rt: Runtime,
        span: trace.Span,
        token: object,
        request_id: str | None,
        trigger: Trigger,
    ):
        self.rt = rt
        self.span = span
        self.token = token
        self.request_id = request_id
        self.trigger = trigger
        self.done = False
        self.lock = threading.Lock()

    def expire(self) -> None:
        """End the span as timed out (the invocation is about to be stopped), unless done."""
        with self.lock:
            if self.done:
                return
            self.done = True
        span = self.span
        span.set_attribute(names.ERROR_TYPE, "timeout")
        span.set_status(
            Status(StatusCode.ERROR, "impending timeout: the invocation reached its deadline")
        )
        span.end()


def _impending_timeout(invocation: _Invocation, margin_s: float) -> None:
    """Runs on the watcher thread when the invocation is about to be stopped."""
    invocation.expire()
    invocation.rt.delivery.flush(margin_s * 0.8)


def _remaining_s(context: Any) -> float | None:
    """The invocation's remaining time in seconds, if the context tells a believable one."""
    try:
        remaining = context.get_remaining_time_in_millis()
    except Exception:
        return None
    if isinstance(remaining, bool) or not isinstance(remaining, int | float):
        return None
    if not (math.isfinite(remaining) and 0 < remaining <= _MAX_REMAINING_MS):
        return None
    return remaining / 1000.0


def _start(
    event: Any, context: Any, table: RouteTable, explicit: Runtime | None
) -> _Invocation | None:
    rt = explicit or current_runtime()
    if rt is None or rt.config.disabled:
        return None
    try:
        now = time.time_ns()
        first = coldstart.begin_invocation()
        try:
            trigger = _describe(event, context, table)
        except Exception as exc:  # a shape we did not foresee: a plain span all the same
            logger.debug("tracing: could not describe the event: %s", exc)
            trigger = _fallback(context)
        attributes = trigger.attributes
        attributes[names.FAAS_COLDSTART] = bool(first and first.coldstart)
        if first is not None and not first.coldstart:
            attributes[names.INIT_TYPE] = first.initialization_type
            attributes[names.PROACTIVE_INIT] = first.proactive
        elif first is not None and first.initialization_type != "on-demand":
            attributes[names.INIT_TYPE] = first.initialization_type  # a SnapStart restore
        # Never the current context: a span leaked by anything before must not become
        # this invocation's parent.
        parent = propagation.extract(trigger.parent) or Context()
        links = _links(trigger)
        span = rt.tracer.start_span(
            trigger.name,
            context=parent,
            kind=trigger.kind,
            attributes=attributes,
            links=links,
            start_time=now,
        )
    except Exception as exc:
        logger.warning("tracing: could not start the invocation span: %s", exc)
        return None
    request_id = attributes.get(names.FAAS_INVOCATION_ID)
    invocation = _Invocation(
        rt,
        span,
        otel_context.attach(trace.set_span_in_context(span)),
        request_id if isinstance(request_id, str) else None,
        trigger,
    )
    try:
        mode = rt.mode
        if mode is not None:
            mode.started(invocation.request_id, invocation.expire)
        margin = rt.config.timeout_margin_ms / 1000.0
        remaining = _remaining_s(context)
        explain = sys.modules.get("tracing.explain")  # loaded only when explains are on
        if explain is not None and explain.policy() is not None:
            explain.invocation_started(
                time.monotonic() + remaining if remaining is not None else None
            )
        watched = mode is not None and mode.watches_deadline
        if rt.watch is not None and remaining is not None and not watched:
            deadline = time.monotonic() + remaining - margin
            rt.watch.arm(deadline, lambda: _impending_timeout(invocation, margin))
        if first is not None:
            coldstart.replay(rt.tracer, span if first.coldstart else None, _function_name(context))
    except Exception as exc:
        logger.warning("tracing: could not prepare the invocation: %s", exc)
    return invocation


def _finish(invocation: _Invocation, result: Any, exc: BaseException | None) -> None:
    rt = invocation.rt
    try:
        if rt.watch is not None:
            rt.watch.disarm()
        with invocation.lock:
            ended_by_watch = invocation.done
            invocation.done = True
        if not ended_by_watch:  # else the deadline watcher ended and sent it already
            span = invocation.span
            try:
                if exc is not None:
                    record_error(span, exc)
                elif not span.is_recording():
                    pass
                elif invocation.trigger.batch:
                    failed = triggers.batch_failures(result)
                    if failed is not None:
                        span.set_attribute(names.BATCH_ITEM_FAILURES, failed)
                elif invocation.trigger.http:
                    status = _status_code(result)
                    if status is not None:
                        span.set_attribute(names.HTTP_RESPONSE_STATUS_CODE, status)
                        if status >= 500:
                            span.set_attribute(names.ERROR_TYPE, str(status))
                            span.set_status(Status(StatusCode.ERROR))
            finally:
                span.end()
    except Exception as err:
        logger.warning("tracing: could not end the invocation span: %s", err)
    finally:
        otel_context.detach(invocation.token)  # type: ignore[arg-type]
    try:
        if rt.mode is not None:
            rt.mode.ended(invocation.request_id)
        else:
            rt.delivery.flush()
    except Exception as err:
        logger.warning("tracing: delivery failed: %s", err)


def _status_code(result: Any) -> int | None:
    """The HTTP status a Function URL answers with: ``statusCode``, else 200 (the result
    is then the JSON body); None for a ``statusCode`` that is not an HTTP status."""
    try:
        code = result.get("statusCode") if triggers.is_mapping(result) else None
        if code is None:
            return 200
        if isinstance(code, bool):
            return None
        if isinstance(code, float):
            code = int(code) if code.is_integer() else None
        elif isinstance(code, str):
            code = int(code) if code.isascii() and code.strip().isdigit() else None
    except Exception:
        return None
    return code if isinstance(code, int) and 100 <= code <= 599 else None


def _text(obj: Any, attribute: str) -> str | None:
    """A string attribute of ``obj``, or None (whatever ``obj`` does)."""
    try:
        value = getattr(obj, attribute, None)
    except Exception:
        return None
    return value if isinstance(value, str) and value else None


def _function_name(context: Any) -> str:
    return _text(context, "function_name") or "handler"


def _resource_id(arn: str) -> tuple[str, str | None]:
    """``cloud.resource_id`` for an invoked ARN, and the alias it was invoked through.

    An alias is replaced by the version that runs, as the semantic conventions
    ask: one environment can be invoked through several aliases.
    """
    parts = arn.split(":")
    if len(parts) != 8 or parts[5] != "function":
        return arn, None
    qualifier = parts[7]
    if qualifier == "$LATEST" or (qualifier.isascii() and qualifier.isdigit()):
        return arn, None
    version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
    return ":".join(parts[:7] + ([version] if version else [])), qualifier


def _fallback(context: Any) -> Trigger:
    return triggers.describe(None, _NO_ROUTES, _function_name(context))


_NO_ROUTES = RouteTable(())


def _links(trigger: Trigger) -> list[Link] | None:
    """Links to the contexts the trigger names (SQS messages), valid ones only."""
    if not trigger.links:
        return None
    links = []
    for carrier, attributes in trigger.links:
        context = propagation.extract_span_context(carrier)
        if context is not None:
            links.append(Link(context, attributes or None))
    return links or None


def _describe(event: Any, context: Any, table: RouteTable) -> Trigger:
    """The trigger, with the attributes the Lambda context gives."""
    trigger = triggers.describe(event, table, _function_name(context))
    attrs = trigger.attributes
    request_id = _text(context, "aws_request_id")
    if request_id:
        attrs[names.FAAS_INVOCATION_ID] = request_id
    arn = _text(context, "invoked_function_arn")
    if arn:
        attrs.update(_arn_attributes(arn))
    return trigger


@functools.lru_cache(maxsize=16)
def _arn_attributes(arn: str) -> tuple[tuple[str, str], ...]:
    """The ``cloud.*`` attributes of an invoked ARN, parsed once per ARN (an environment
    is invoked through one ARN, or a few aliases)."""
    resource_id, alias = _resource_id(arn)
    out = [(names.CLOUD_RESOURCE_ID, resource_id)]
    if alias:
        out.append((names.INVOKED_ALIAS, alias))
    parts = arn.split(":")
    if len(parts) > 4 and parts[4]:
        out.append((names.CLOUD_ACCOUNT_ID, parts[4]))
    return tuple(out)


def reset_caches() -> None:
    """Forget parsed ARNs (they depend on ``AWS_LAMBDA_FUNCTION_VERSION``): tests."""
    _arn_attributes.cache_clear()
