"""The toolkit beside other OpenTelemetry instrumentations (botocore, urllib3, requests,
contrib's psycopg), user span processors, and outgoing propagation: real libraries, a
real HTTP server standing in for the services called, a real PostgreSQL."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.lambda_events import LambdaContext, http_event
from tracing import TracingConfig, setup_tracing, traced_handler
from tracing.propagation import sqs_message_attributes
from tracing.testing import InMemorySender, capture_spans
from tracing.triggers import RouteTable, describe


class _Service:
    """A local HTTP server that records each request's headers and body; it answers
    as DynamoDB's ListTables, SNS's Publish, or plain JSON, by what was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                service.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if b"Action=Publish" in body:
                    answer = (
                        b'<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                        b"<PublishResult><MessageId>m-1</MessageId></PublishResult>"
                        b"<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>"
                        b"</PublishResponse>"
                    )
                    kind = "text/xml"
                elif "ListTables" in self.headers.get("X-Amz-Target", ""):
                    answer, kind = b'{"TableNames": []}', "application/x-amz-json-1.0"
                else:
                    answer, kind = b'{"ok": true}', "application/json"
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[_Service]:
    s = _Service()
    yield s
    s.stop()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTTESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture
def global_textmap() -> Iterator[None]:
    saved = propagate.get_global_textmap()
    yield
    propagate.set_global_textmap(saved)


def _root(spans: list[ReadableSpan]) -> ReadableSpan:
    roots = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(roots) == 1, [s.name for s in spans]
    return roots[0]


def _traceparent(span: ReadableSpan) -> str:
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"


def test_requests_and_urllib3_spans_join_the_trace_and_propagate_w3c(
    sink: InMemorySender, service: _Service
) -> None:
    import requests
    import urllib3
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    RequestsInstrumentor().instrument()
    URLLib3Instrumentor().instrument()
    try:

        @traced_handler
        def handler(event, context):
            requests.get(service.url + "/with-requests", timeout=5)
            urllib3.PoolManager().request("GET", service.url + "/with-urllib3")
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
    finally:
        RequestsInstrumentor().uninstrument()
        URLLib3Instrumentor().uninstrument()
    root = _root(sink.spans)
    clients = [s for s in sink.spans if s.kind is SpanKind.CLIENT]
    assert len(clients) >= 2  # delivered with the toolkit's spans, in the same flush
    by_id = {s.context.span_id: s for s in sink.spans}
    for span in clients:
        assert span.context.trace_id == root.context.trace_id
        ancestor = span
        while ancestor.parent is not None and ancestor.parent.span_id in by_id:
            ancestor = by_id[ancestor.parent.span_id]
        assert ancestor is root
    sent = [headers.get("traceparent") for headers, _ in service.requests]
    assert len(sent) == 2 and all(sent)
    client_ids = {f"{s.context.span_id:016x}" for s in clients}
    for value in sent:
        _, trace_hex, span_hex, _ = value.split("-")
        assert trace_hex == f"{root.context.trace_id:032x}" and span_hex in client_ids


def test_botocore_spans_join_the_trace_and_sns_carries_w3c_context(
    sink: InMemorySender, service: _Service, aws: None
) -> None:
    import boto3
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    BotocoreInstrumentor().instrument()
    try:

        @traced_handler
        def handler(event, context):
            boto3.session.Session().client("dynamodb", endpoint_url=service.url).list_tables()
            boto3.session.Session().client("sns", endpoint_url=service.url).publish(
                TopicArn="arn:aws:sns:us-east-1:123456789012:todos", Message="created"
            )
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
    finally:
        BotocoreInstrumentor().uninstrument()
    root = _root(sink.spans)
    calls = {s.name: s for s in sink.spans if s.kind in (SpanKind.CLIENT, SpanKind.PRODUCER)}
    assert {"DynamoDB.ListTables", "todos send"} <= set(calls)
    for span in calls.values():
        assert span.context.trace_id == root.context.trace_id
        assert span.parent is not None and span.parent.span_id == root.context.span_id
    # HTTP to AWS carries X-Ray's header (what AWS services propagate) ...
    assert all("x-amzn-trace-id" in headers for headers, _ in service.requests)
    # ... and the SNS message carries W3C context in its attributes, which the
    # toolkit's SNS trigger then reads as the parent on the consumer's side.
    publish = next(body for _, body in service.requests if b"Action=Publish" in body)
    from urllib.parse import parse_qs

    form = {k: v[0] for k, v in parse_qs(publish.decode()).items()}
    attributes = {}
    for i in range(1, 10):
        name = form.get(f"MessageAttributes.entry.{i}.Name")
        if name:
            attributes[name] = {
                "Type": "String",
                "Value": form[f"MessageAttributes.entry.{i}.Value.StringValue"],
            }
    assert "traceparent" in attributes
    event = {
        "Records": [
            {
                "EventSource": "aws:sns",
                "Sns": {
                    "TopicArn": "arn:aws:sns:us-east-1:123456789012:todos",
                    "MessageAttributes": attributes,
                },
            }
        ]
    }
    trigger = describe(event, RouteTable(()), "consumer")
    assert trigger.parent is not None
    assert trigger.parent["traceparent"].split("-")[1] == f"{root.context.trace_id:032x}"


def test_sqs_message_attributes_helper_round_trips_through_the_sqs_trigger(
    sink: InMemorySender,
) -> None:
    seen: dict[str, Any] = {}

    @traced_handler
    def handler(event, context):
        seen.update(sqs_message_attributes())
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    root = _root(sink.spans)
    assert seen["traceparent"]["StringValue"] == _traceparent(root)
    record = {
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:todos",
        "messageAttributes": {
            "traceparent": {"stringValue": seen["traceparent"]["StringValue"], "dataType": "String"}
        },
    }
    trigger = describe({"Records": [record, record]}, RouteTable(()), "consumer")
    assert [carrier["traceparent"] for carrier, _ in trigger.links] == [_traceparent(root)] * 2
    assert sqs_message_attributes() == {}  # outside any span


def test_contrib_psycopg_spans_join_the_trace(sink: InMemorySender, postgres) -> None:
    import psycopg
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor().instrument()
    try:

        @traced_handler
        def handler(event, context):
            with psycopg.connect(postgres.conninfo()) as conn:
                conn.execute("SELECT count(*) FROM todos WHERE name = %s", ("secret title",))
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
    finally:
        PsycopgInstrumentor().uninstrument()
    root = _root(sink.spans)
    queries = [s for s in sink.spans if s.kind is SpanKind.CLIENT]
    assert queries, [s.name for s in sink.spans]
    for span in queries:
        assert span.context.trace_id == root.context.trace_id
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        # contrib records the statement with its placeholders, never the parameters
        assert "secret title" not in json.dumps(dict(span.attributes or {}))


def test_user_span_processors_see_every_span_and_are_flushed_in_the_bound() -> None:
    simple, batched = InMemorySpanExporter(), InMemorySpanExporter()
    sender = InMemorySender()
    batch = BatchSpanProcessor(batched, schedule_delay_millis=60_000)  # flushed only by us
    setup_tracing(
        TracingConfig(service_name="test"),
        sender=sender,
        processors=[SimpleSpanProcessor(simple), batch],
    )

    @traced_handler
    def handler(event, context):
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    ours = {s.context.span_id for s in sender.spans}
    assert ours and {s.context.span_id for s in simple.get_finished_spans()} == ours
    # The batch processor's 60 s schedule never fired: delivery flushed it.
    assert {s.context.span_id for s in batched.get_finished_spans()} == ours


def test_a_failing_user_processor_never_breaks_the_handler_or_the_toolkit() -> None:
    class Broken(SimpleSpanProcessor):
        def force_flush(self, timeout_millis: int = 30000) -> bool:
            raise RuntimeError("user bug")

    sender = InMemorySender()
    setup_tracing(
        TracingConfig(service_name="test"),
        sender=sender,
        processors=[Broken(InMemorySpanExporter())],
    )

    @traced_handler
    def handler(event, context):
        return {"statusCode": 201}

    assert handler(http_event(), LambdaContext())["statusCode"] == 201
    assert any(s.kind is SpanKind.SERVER for s in sender.spans)


def test_datadog_exporter_propagates_datadog_headers_too(
    service: _Service, global_textmap: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    monkeypatch.delenv("OTEL_PROPAGATORS", raising=False)
    sender = capture_spans(TracingConfig(service_name="test", exporter="datadog"))
    RequestsInstrumentor().instrument()
    try:

        @traced_handler
        def handler(event, context):
            requests.get(service.url, timeout=5)
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
    finally:
        RequestsInstrumentor().uninstrument()
    client = next(s for s in sender.spans if s.kind is SpanKind.CLIENT)
    headers, _ = service.requests[-1]
    assert headers["traceparent"].split("-")[2] == f"{client.context.span_id:016x}"
    assert int(headers["x-datadog-trace-id"]) == client.context.trace_id & ((1 << 64) - 1)
    assert int(headers["x-datadog-parent-id"]) == client.context.span_id
    assert headers["x-datadog-sampling-priority"] == "1"
    assert headers["x-datadog-tags"] == f"_dd.p.tid={client.context.trace_id >> 64:016x}"


def test_datadog_propagator_by_name_in_otel_propagators(global_textmap: None) -> None:
    # The entry point OTEL_PROPAGATORS=datadog resolves to.
    from importlib.metadata import entry_points

    from opentelemetry.propagators.textmap import DefaultGetter

    from tracing.datadog_propagator import DatadogPropagator

    (point,) = entry_points(group="opentelemetry_propagator", name="datadog")
    assert point.load() is DatadogPropagator
    carrier = {"x-datadog-trace-id": "1234", "x-datadog-parent-id": "5678"}
    ctx = DatadogPropagator().extract(carrier, getter=DefaultGetter())
    from opentelemetry import trace

    span_context = trace.get_current_span(ctx).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (1234, 5678)
    malformed = DatadogPropagator().extract({"x-datadog-trace-id": "x", "x-datadog-parent-id": "1"})
    assert not trace.get_current_span(malformed).get_span_context().is_valid
