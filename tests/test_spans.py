"""traced() in all its forms, and log correlation."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.lambda_events import LambdaContext, http_event
from tracing import JsonFormatter, current_span, names, traced, traced_handler
from tracing.testing import InMemorySender


def run_in_invocation(body) -> None:
    """Run ``body`` inside a warm invocation (the first one is spent on the cold start)."""

    @traced_handler
    def handler(event, context):
        body()
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    handler(http_event(), LambdaContext())


def test_decorator_forms(sink: InMemorySender) -> None:
    @traced
    def plain() -> int:
        return 1

    @traced()
    def empty_call() -> int:
        return 2

    @traced("Named", kind=SpanKind.CLIENT, attributes={"k": "v"})
    def named() -> int:
        return 3

    @traced(name="Keyword")
    def keyword() -> int:
        return 4

    results = []
    run_in_invocation(lambda: results.extend([plain(), empty_call(), named(), keyword()]))
    assert results[-4:] == [1, 2, 3, 4]
    spans = {s.name: s for s in sink.spans}
    assert "test_decorator_forms.<locals>.plain" in spans
    assert "test_decorator_forms.<locals>.empty_call" in spans
    assert spans["Named"].kind is SpanKind.CLIENT
    assert spans["Named"].attributes["k"] == "v"
    assert spans["Named"].attributes[names.DD_RESOURCE_NAME] == "Named"
    assert "Keyword" in spans


def test_async_function_and_async_with(sink: InMemorySender) -> None:
    @traced("Query Todos")
    async def query() -> str:
        async with traced("inner") as span:
            span.set_attribute("rows", 3)
            await asyncio.sleep(0)
        return "done"

    out = []
    run_in_invocation(lambda: out.append(asyncio.run(query())))
    assert out[-1] == "done"
    spans = {s.name: s for s in sink.spans}
    assert spans["inner"].parent.span_id == spans["Query Todos"].context.span_id
    assert spans["inner"].attributes["rows"] == 3


def test_async_exception_is_recorded_and_reraised(sink: InMemorySender) -> None:
    @traced("Failing")
    async def failing() -> None:
        raise KeyError("missing")

    def body() -> None:
        with pytest.raises(KeyError):
            asyncio.run(failing())

    run_in_invocation(body)
    failing_span = next(s for s in sink.spans if s.name == "Failing")
    assert failing_span.status.status_code is StatusCode.ERROR
    assert failing_span.attributes[names.ERROR_TYPE] == "KeyError"


def test_context_manager_needs_a_name() -> None:
    with pytest.raises(TypeError), traced():
        pass


def test_current_span_during_init_and_invocation(sink: InMemorySender) -> None:
    with traced(names.DSQL_CONNECT):
        current_span().set_attribute(names.DSQL_RECONNECT, False)

    seen = []

    @traced_handler
    def handler(event, context):
        with traced("Save Todo"):
            current_span().set_attribute(names.DSQL_OCC_RETRY_COUNT, 2)
            seen.append(current_span().get_span_context().is_valid)
        return {"statusCode": 201}

    handler(http_event("POST", "/todos"), LambdaContext())
    spans = {s.name: s for s in sink.spans}
    assert spans[names.DSQL_CONNECT].attributes[names.DSQL_RECONNECT] is False
    assert spans["Save Todo"].attributes[names.DSQL_OCC_RETRY_COUNT] == 2
    assert seen == [True]


def test_log_records_carry_trace_ids(sink: InMemorySender) -> None:
    stream = io.StringIO()
    log_handler = logging.StreamHandler(stream)
    log_handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("app")
    logger.addHandler(log_handler)
    logger.setLevel(logging.INFO)
    text = io.StringIO()
    text_handler = logging.StreamHandler(text)
    text_handler.setFormatter(logging.Formatter("%(message)s [dd.trace_id=%(dd.trace_id)s]"))
    logger.addHandler(text_handler)
    try:
        logger.info("outside")

        @traced_handler
        def handler(event, context):
            logger.info("inside")
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
    finally:
        logger.removeHandler(log_handler)
        logger.removeHandler(text_handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    root = next(s for s in sink.spans if s.kind is SpanKind.SERVER)
    assert "trace_id" not in outside
    assert inside["message"] == "inside"
    assert inside["trace_id"] == f"{root.context.trace_id:032x}"
    assert inside["span_id"] == f"{root.context.span_id:016x}"
    assert inside["dd"]["trace_id"] == str(root.context.trace_id & (2**64 - 1))
    assert inside["dd"]["span_id"] == str(root.context.span_id)
    assert text.getvalue().splitlines() == [
        "outside [dd.trace_id=0]",
        f"inside [dd.trace_id={root.context.trace_id & (2**64 - 1)}]",
    ]


def test_queue_is_bounded_while_the_collector_is_down() -> None:
    from tracing import TracingConfig
    from tracing.testing import capture_spans, delivery

    sink = capture_spans(TracingConfig(service_name="test", max_queue_size=5))
    processor = delivery()
    sink.fail = True
    run_in_invocation(lambda: [traced("x")(lambda: None)() for _ in range(10)])
    assert processor.pending() == 5
    assert processor.stats.dropped > 0
