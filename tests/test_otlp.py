"""The built-in OTLP encoder against the official one; the transport against real servers."""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from tests.support import FakeClock, RecordingSender
from tracing.otlp import ExportError, OtlpHttpExporter, encode_request


def make_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "svc", "faas.max_memory": 268435456, "x": [1, 2]})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(
        "dsql-lambda-tracing", "0.2.0", schema_url="https://opentelemetry.io/schemas/1.26.0"
    )
    other = provider.get_tracer("other-scope")
    remote = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("dd", "s:1")]),
    )
    with tracer.start_as_current_span(
        "POST /todos", context=set_span_in_context(NonRecordingSpan(remote)), kind=SpanKind.SERVER
    ) as root:
        root.set_attributes(
            {
                "str": "héllo ☃",
                "empty": "",
                "bool_t": True,
                "bool_f": False,
                "int": 42,
                "zero": 0,
                "neg": -7,
                "big": 2**62,
                "float": 3.25,
                "strs": ["a", "b"],
                "ints": [1, -2, 3],
                "floats": [0.5],
                "bools": [True, False],
                "long": "x" * 300,
            }
        )
        root.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span(
            "INSERT todos",
            kind=SpanKind.CLIENT,
            links=[Link(remote, {"link.attr": "v"})],
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "conflict"))
        with other.start_as_current_span("Save Todo") as ok:
            ok.set_status(Status(StatusCode.OK))
    for kind in SpanKind:
        tracer.start_span(f"kind-{kind.name}", kind=kind).end()
    return exporter.get_finished_spans()


def test_encoding_matches_the_official_encoder() -> None:
    spans = make_spans()
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(encode_request(spans))
    official = encode_spans(spans)
    assert ours == official
    # Compared field by field as well, so that a difference names itself.
    assert len(ours.resource_spans) == 1
    for a, b in zip(
        ours.resource_spans[0].scope_spans, official.resource_spans[0].scope_spans, strict=True
    ):
        assert a.scope == b.scope
        assert a.schema_url == b.schema_url
        for x, y in zip(a.spans, b.spans, strict=True):
            assert x == y, x.name


def test_encoding_groups_resources() -> None:
    spans = list(make_spans())
    other = TracerProvider(resource=Resource({"service.name": "second"}))
    exporter = InMemorySpanExporter()
    other.add_span_processor(SimpleSpanProcessor(exporter))
    other.get_tracer("t").start_span("x").end()
    spans += exporter.get_finished_spans()
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(encode_request(spans))
    assert ours == encode_spans(spans)
    assert len(ours.resource_spans) == 2


class _Collector(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: list[tuple[dict[str, str], bytes]] = []
    status = 200
    delay = 0.0
    drop_idle = False  # close the connection after answering, without saying so

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append((dict(self.headers), body))
        time.sleep(type(self).delay)
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
        if type(self).drop_idle:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, type[_Collector]]]:
    handler = type("Collector", (_Collector,), {"bodies": [], "status": 200, "delay": 0.0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1/traces", handler
    server.shutdown()
    server.server_close()


def test_export_posts_protobuf_with_headers(collector) -> None:
    url, handler = collector
    exporter = OtlpHttpExporter(url, headers={"dd-api-key": "secret-key"})
    spans = make_spans()
    exporter.export(spans, timeout=2.0)
    exporter.export(spans[:1], timeout=2.0)  # same keep-alive connection
    headers, body = handler.bodies[0]
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["dd-api-key"] == "secret-key"
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(body)
    assert decoded == encode_spans(spans)
    assert len(handler.bodies) == 2
    exporter.close()


def test_export_gzip(collector) -> None:
    url, handler = collector
    exporter = OtlpHttpExporter(url, compression="gzip")
    spans = make_spans()
    exporter.export(spans, timeout=2.0)
    headers, body = handler.bodies[0]
    assert headers["Content-Encoding"] == "gzip"
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(gzip.decompress(body))
    assert decoded == encode_spans(spans)


def test_export_rejected_by_collector(collector) -> None:
    url, handler = collector
    handler.status = 503
    with pytest.raises(ExportError, match="503"):
        OtlpHttpExporter(url).export(make_spans(), timeout=2.0)


def test_export_refused_is_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ExportError) as caught:
        OtlpHttpExporter(f"http://127.0.0.1:{port}/v1/traces").export(make_spans(), timeout=2.0)
    assert caught.value.retryable  # refused: certainly not delivered, so kept for later


def test_export_blackhole_is_bounded_by_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    port = listener.getsockname()[1]
    try:
        started = time.perf_counter()
        with pytest.raises(ExportError):
            OtlpHttpExporter(f"http://127.0.0.1:{port}/v1/traces").export(make_spans(), timeout=0.2)
        assert time.perf_counter() - started < 1.5
    finally:
        listener.close()


def test_export_reconnects_when_the_collector_closed_the_connection(collector) -> None:
    url, handler = collector
    exporter = OtlpHttpExporter(url)
    handler.drop_idle = True  # as a collector does with connections idle during a freeze
    exporter.export(make_spans(), timeout=2.0)
    time.sleep(0.05)  # not a synchronisation: the connection sits idle, as during a freeze
    exporter.export(make_spans(), timeout=2.0)
    exporter.export(make_spans(), timeout=2.0)
    assert len(handler.bodies) == 3


def test_export_speaks_http11_to_the_official_parser(collector) -> None:
    url, handler = collector
    exporter = OtlpHttpExporter(url, headers={"x-scope": "a b"})
    for _ in range(3):
        exporter.export(make_spans()[:2], timeout=2.0)
    assert len(handler.bodies) == 3
    headers = handler.bodies[0][0]
    assert headers["Host"].startswith("127.0.0.1:")
    assert headers["x-scope"] == "a b"


def test_blackholed_collector_costs_one_timeout_then_only_probes() -> None:
    from tracing.export import InvocationSpanProcessor

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepts connections, never answers
    port = listener.getsockname()[1]
    clock = FakeClock()
    sender = RecordingSender(OtlpHttpExporter(f"http://127.0.0.1:{port}/v1/traces"))
    processor = InvocationSpanProcessor(sender, timeout_ms=200, probe_timeout_ms=5, clock=clock)
    spans = make_spans()
    try:
        for span in spans:
            processor.on_end(span)
        assert processor.flush() is False
        for _ in range(5):
            for span in spans:  # the next invocation's spans
                processor.on_end(span)
            clock.advance(60)  # the pause is over: the next flush probes
            assert processor.flush() is False
        for span in spans:
            processor.on_end(span)
        assert processor.flush() is False  # inside the pause: nothing tried at all
    finally:
        listener.close()
    # The budgets handed to the transport: one full flush timeout, then probes only.
    assert sender.timeouts[0] == pytest.approx(0.2)
    assert len(sender.timeouts) == 6
    assert all(t == pytest.approx(0.005) for t in sender.timeouts[1:])
    assert processor.stats.failed_exports == 6
    assert processor.stats.skipped_flushes == 1
    # Unanswered: they may have arrived, so they are not sent again (no duplicates).
    assert processor.stats.dropped == 6 * len(spans)
    assert processor.pending() == len(spans)  # the ones that ended during the pause


@pytest.mark.parametrize(("status", "kept"), [(503, True), (429, True), (400, False), (500, False)])
def test_rejected_spans_are_kept_only_when_the_answer_says_retry(collector, status, kept) -> None:
    from tracing.export import InvocationSpanProcessor

    url, handler = collector
    handler.status = status
    clock = FakeClock()
    processor = InvocationSpanProcessor(OtlpHttpExporter(url), timeout_ms=1000, clock=clock)
    spans = make_spans()
    for span in spans:
        processor.on_end(span)
    assert processor.flush() is False
    assert processor.pending() == (len(spans) if kept else 0)
    handler.status = 200
    clock.advance(60)
    assert processor.flush() is True
    assert len(handler.bodies) == (2 if kept else 1)


def test_refused_spans_are_kept_and_sent_when_the_collector_answers() -> None:
    from tracing.export import InvocationSpanProcessor

    handler = type("Collector", (_Collector,), {"bodies": [], "status": 200, "delay": 0.0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
    server.server_bind()  # bound, not listening: connections are refused
    clock = FakeClock()
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.server_port}/v1/traces")
    processor = InvocationSpanProcessor(exporter, timeout_ms=500, clock=clock)
    spans = make_spans()
    for span in spans:
        processor.on_end(span)
    try:
        assert processor.flush() is False
        assert processor.pending() == len(spans)
        server.server_activate()  # the collector is back
        threading.Thread(target=server.serve_forever, daemon=True).start()
        clock.advance(60)
        assert processor.flush() is True
    finally:
        server.shutdown()
        server.server_close()
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(handler.bodies[-1][1])
    assert decoded == encode_spans(spans)
