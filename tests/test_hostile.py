"""Hostile input and delivery edge cases: every class of fault of issue 16, driven as a class.

Delivery bounds on every transport, backlogs delivered in batches, unencodable
values, whatever the handler or the runtime hands the invocation span,
``traced`` across threads and tasks, and secrets in query text, errors and
endpoints.  Real servers on loopback (plain and TLS), a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.figures import record
from tests.lambda_events import LambdaContext, http_event
from tests.support import FakeClock
from tracing import TracingConfig, names, runtime, traced, traced_handler
from tracing.export import MAX_BATCH_SPANS, InvocationSpanProcessor
from tracing.otlp import ExportError, OtlpHttpExporter, encode_request
from tracing.testing import InMemorySender, capture_spans

LOGGER = "dsql-lambda-tracing"
#: Cases tried per class, written as reliability figures when the module ends.
CASES: dict[str, dict[str, int]] = {}


def count(kind: str, **figures: int) -> None:
    entry = CASES.setdefault(kind, {})
    for key, value in figures.items():
        entry[key] = entry.get(key, 0) + value


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    for kind, figures in CASES.items():
        record(f"hostile: {kind}", **figures)


def sdk_spans(count: int = 3, **attributes: object) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "hostile"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for i in range(count):
        tracer.start_span(f"s{i}", attributes=attributes or None).end()
    return list(memory.get_finished_spans())


# --- 1, 2: one deadline over every transport ------------------------------------------


class _Server:
    """A loopback server (plain or TLS) whose connection handler is a function."""

    def __init__(self, serve, tls: ssl.SSLContext | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._serve = serve
        self._tls = tls
        self._stop = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            self._serve(conn, self._stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def _read_request(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return True


def _drip(conn: socket.socket, stop: threading.Event) -> None:
    """Reads the request, then answers one byte every 100 ms."""
    _read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
        if stop.wait(0.1):
            return
        conn.sendall(bytes([byte]))


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accepts (TLS included, for a TLS server) and never says anything."""
    stop.wait(10)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    from dsqltrace.pg import make_certificates

    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(ca))
    return server, client


def _timed_export(exporter: OtlpHttpExporter, timeout: float) -> tuple[float, ExportError | None]:
    started = time.monotonic()
    try:
        exporter.export(sdk_spans(), timeout)
    except ExportError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.parametrize(
    ("scheme", "serve"),
    [("http", _drip), ("https", _drip), ("https", _silent)],
    ids=["plain, one byte per 100 ms", "TLS, one byte per 100 ms", "TLS, handshake never answered"],
)
def test_an_export_never_outlasts_its_timeout(tls, scheme, serve) -> None:
    server = _Server(serve, tls[0] if scheme == "https" else None)
    try:
        if scheme == "https" and serve is _silent:
            server._tls = None  # accept TCP, never speak TLS: the handshake waits
        exporter = OtlpHttpExporter(
            f"{scheme}://localhost:{server.port}/v1/traces", tls_context=tls[1]
        )
        elapsed, error = _timed_export(exporter, 0.3)
    finally:
        server.close()
    # The whole answer would take 3.7 s; what matters is that the deadline ended it.
    assert error is not None
    assert "timed out" in str(error) or "flush timeout" in str(error)
    assert elapsed < 1.5, elapsed
    record(
        "hostile: export bound",
        collector={
            "_drip": f"{scheme}, one byte per 100 ms",
            "_silent": f"{scheme}, TLS handshake never answered",
        }[serve.__name__],
        timeout_ms=300,
        took_ms=round(elapsed * 1000),
    )


def test_tls_export_is_delivered_and_verified(tls) -> None:
    bodies: list[bool] = []

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        while _read_request(conn):
            bodies.append(True)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = _Server(answer, tls[0])
    try:
        ok = OtlpHttpExporter(f"https://localhost:{server.port}/v1/traces", tls_context=tls[1])
        ok.export(sdk_spans(), 2.0)
        ok.export(sdk_spans(), 2.0)  # the same kept-alive TLS connection
        untrusted = OtlpHttpExporter(f"https://localhost:{server.port}/v1/traces")
        with pytest.raises(ExportError, match="CERTIFICATE_VERIFY_FAILED") as caught:
            untrusted.export(sdk_spans(), 2.0)
    finally:
        server.close()
    assert len(bodies) == 2 and server.connections == 2
    assert caught.value.retryable  # nothing was sent


def test_a_retry_after_a_stale_connection_gets_only_what_is_left() -> None:
    def first_then_stale_then_silent(conn: socket.socket, stop: threading.Event) -> None:
        if server.connections == 1:
            _read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            _read_request(conn)  # the second request on the kept-alive connection...
            return  # ...is met with a close: the connection was stale
        stop.wait(10)  # the fresh connection never answers

    server = _Server(first_then_stale_then_silent)
    try:
        exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
        exporter.export(sdk_spans(), 2.0)
        elapsed, error = _timed_export(exporter, 1.0)
    finally:
        server.close()
    assert error is not None and server.connections == 2  # it did retry, once
    assert elapsed < 1.6, elapsed  # a fresh full timeout for the retry would take 2 s
    record(
        "hostile: retry after a stale connection", timeout_ms=1000, took_ms=round(elapsed * 1000)
    )


def test_a_collector_on_an_unresolvable_name_fails_within_the_timeout() -> None:
    exporter = OtlpHttpExporter("http://collector.invalid:4318/v1/traces")
    elapsed, error = _timed_export(exporter, 0.5)
    assert error is not None and error.retryable
    assert elapsed < 2.0


def test_credentials_in_an_endpoint_are_never_logged(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        TracingConfig(
            environ={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://user:hunter2@host/x?key=s3cr3t"}
        )
        TracingConfig(endpoint="grpc://admin:hunter2@collector:4317?token=s3cr3t")
    assert caplog.records, "a bad endpoint warns"
    assert "hunter2" not in caplog.text and "s3cr3t" not in caplog.text
    assert "host" in caplog.text
    exporter = OtlpHttpExporter("https://user:hunter2@collector.example:4318/v1/traces")
    assert exporter.address == "collector.example:4318"


# --- 3: backlogs in bounded batches, bounded by bytes ----------------------------------


class _SlowSender(InMemorySender):
    """Each export takes 80 ms of the processor's clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock

    def export(self, spans, timeout: float) -> None:
        super().export(spans, timeout)
        self.clock.advance(0.08)


def test_a_backlog_is_delivered_in_bounded_batches_and_nothing_is_lost() -> None:
    clock = FakeClock()
    sender = _SlowSender(clock)
    processor = InvocationSpanProcessor(sender, timeout_ms=250, clock=clock)
    sender.fail = True
    for span in sdk_spans(2000):
        processor.on_end(span)
    assert processor.flush() is False  # the outage: everything kept
    assert processor.pending() == 2000
    sender.fail = False
    clock.advance(60)
    per_flush = []
    while processor.pending():
        for span in sdk_spans(3):  # each invocation adds its own spans
            processor.on_end(span)
        before = len(sender.batches)
        processor.flush()
        per_flush.append(len(sender.batches) - before)
        assert len(per_flush) < 50
    batches = [len(b) for b in sender.batches]
    assert max(batches) <= MAX_BATCH_SPANS
    assert sum(batches) == 2000 + 3 * len(per_flush)  # nothing lost
    assert per_flush[0] == 1  # the first flush after recovery is one small probe
    assert batches[0] <= 64
    # No flush starts a batch after half its time: at most two 80 ms batches in 250 ms.
    assert max(per_flush) == 2
    record(
        "hostile: backlog after an outage",
        kept=2000,
        lost=2000 + 3 * len(per_flush) - sum(batches),
        flushes_to_drain=len(per_flush),
        largest_batch=max(batches),
    )


def test_encoding_counts_against_the_deadline_and_keeps_the_spans() -> None:
    exporter = OtlpHttpExporter("http://127.0.0.1:9/v1/traces")
    with pytest.raises(ExportError, match="encoding used up") as caught:
        exporter.export(sdk_spans(200, blob="x" * 2000), timeout=1e-9)
    assert caught.value.retryable  # nothing was sent, so the spans may go again


def test_the_queue_is_bounded_in_bytes() -> None:
    processor = InvocationSpanProcessor(InMemorySender(), max_queue_bytes=1024 * 1024)
    for span in sdk_spans(2048, **{"user_agent.original": "x" * 8192}):
        processor.on_end(span)
    assert processor.pending_bytes() <= 1024 * 1024
    assert 100 < processor.pending() < 2048
    assert processor.stats.dropped == 2048 - processor.pending()
    record(
        "hostile: 8 KB attributes while the collector is down",
        spans=2048,
        kept=processor.pending(),
        kept_bytes=processor.pending_bytes(),
        byte_limit=1024 * 1024,
    )


# --- 4: unencodable values ---------------------------------------------------------------

_HOSTILE_VALUES = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=())),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.integers(min_value=-(2**66), max_value=2**66), max_size=4),
    st.lists(st.text(alphabet=st.characters(codec=None)), max_size=4),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(alphabet=st.characters(codec=None), max_size=30),
    event=st.text(alphabet=st.characters(codec=None), max_size=30),
    values=st.dictionaries(
        st.text(alphabet=st.characters(codec=None), max_size=10), _HOSTILE_VALUES, max_size=6
    ),
)
def test_any_attribute_value_encodes_into_a_valid_request(name, event, values) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = provider.get_tracer("t").start_span(name or "x")
    span.set_attributes(values)
    span.add_event(event, values)
    span.end()
    good = sdk_spans(1)
    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(encode_request([*memory.get_finished_spans(), *good]))
    out = [s for r in decoded.resource_spans for ss in r.scope_spans for s in ss.spans]
    assert len(out) == 2  # the hostile span, and the good one beside it
    count("unencodable values", cases=1, spans_lost=2 - len(out))
    for kv in out[0].attributes:
        value = values.get(kv.key) if kv.key in values else None
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            in_range = -(2**63) <= value < 2**63
            assert (
                (kv.value.int_value == value) if in_range else (kv.value.string_value == str(value))
            )


def _official_attributes(spans) -> dict | None:
    """The attributes the official encoder sends for the first span, None if it fails."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    try:
        request = encode_spans(spans)
        request.SerializeToString()
    except (ValueError, UnicodeError):
        return None
    span = request.resource_spans[0].scope_spans[0].spans[0]
    return {kv.key: kv.value for kv in span.attributes}


def test_what_the_official_encoder_does_with_these_values() -> None:
    """The official encoder drops such a value (or fails the export); ours sends it visibly."""
    logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").disabled = True
    try:
        for key, value, shown in (
            ("big", 2**64, str(2**64)),
            ("small", -(2**63) - 1, str(-(2**63) - 1)),
            ("name", "file \udcff", "file \ufffd"),
        ):
            spans = sdk_spans(1, **{key: value})
            official = _official_attributes(spans)
            assert official is None or key not in official
            decoded = ExportTraceServiceRequest()
            decoded.ParseFromString(encode_request(spans))
            (kv,) = decoded.resource_spans[0].scope_spans[0].spans[0].attributes
            assert (kv.key, kv.value.string_value) == (key, shown)
    finally:
        logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").disabled = False


class _PoisonSpan:
    """A span-like object whose encoding fails (as a buggy processor's output might)."""

    context = sdk_spans(1)[0].context
    resource = Resource({})
    instrumentation_scope = None

    @property
    def name(self) -> str:
        raise RuntimeError("poison")


def test_one_span_that_cannot_be_encoded_never_holds_back_the_others() -> None:
    delivered: list[int] = []

    def answer(conn: socket.socket, stop: threading.Event) -> None:
        while _read_request(conn):
            delivered.append(1)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = _Server(answer)
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    processor = InvocationSpanProcessor(exporter)
    try:
        for _ in range(5):  # five invocations, each with one poisoned span among good ones
            for span in [*sdk_spans(2), _PoisonSpan(), *sdk_spans(1, huge=2**80)]:
                processor.on_end(span)  # type: ignore[arg-type]
            assert processor.flush() is True
    finally:
        server.close()
    assert len(delivered) == 5
    assert exporter.unencodable == 5
    record("hostile: poison span among good ones", exports=5, poison_dropped=5, good_delivered=20)
    assert processor.stats.exported == 20 and processor.pending() == 0


# --- 5, 6: the invocation's span survives whatever it is handed --------------------------


class _Context(LambdaContext):
    def __init__(self, remaining) -> None:
        super().__init__()
        self._remaining = remaining

    def get_remaining_time_in_millis(self):  # type: ignore[override]
        if isinstance(self._remaining, BaseException):
            raise self._remaining
        return self._remaining


class _BadStr(Exception):
    def __init__(self, raised: BaseException) -> None:
        super().__init__()
        self.raised = raised

    def __str__(self) -> str:
        raise self.raised


_REMAINING = st.sampled_from(
    [
        RuntimeError("no deadline"),
        "1000",
        float("inf"),
        float("nan"),
        10**30,
        -5,
        0,
        None,
        True,
        3000,
    ]
)
_STATUS = st.sampled_from(
    [float("inf"), float("-inf"), float("nan"), 2**70, "abc", "²", True, None, 204, 503, 1e999, -1]
)
_REQUEST_CONTEXT = st.sampled_from(
    [None, [], "string", 7, {"http": None}, {"http": []}, {"http": {"method": 5}}]
)
_HEADERS = st.sampled_from(
    [
        {"x-datadog-trace-id": "²", "x-datadog-parent-id": "1"},
        {
            "x-datadog-trace-id": "1",
            "x-datadog-parent-id": "2",
            "x-datadog-sampling-priority": "--1",
        },
        {"x-datadog-trace-id": "9" * 5000, "x-datadog-parent-id": "1"},
        {"traceparent": 5, "user-agent": ["list"]},
        {"traceparent": "00-" + "f" * 5000},
        {
            "tracestate": "=" * 10000,
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    remaining=_REMAINING,
    status=_STATUS,
    request_context=_REQUEST_CONTEXT,
    headers=_HEADERS,
    outcome=st.sampled_from(["return", "raise", "bad-str", "bad-str-base"]),
)
def test_every_invocation_is_traced_and_its_outcome_passes_unchanged(
    remaining, status, request_context, headers, outcome
) -> None:
    from tracing.testing import reset_tracing

    reset_tracing()
    sink = capture_spans()
    result = {"statusCode": status, "body": "{}"}
    error: BaseException = {
        "raise": ValueError("plain"),
        "bad-str": _BadStr(RuntimeError("str failed")),
        "bad-str-base": _BadStr(KeyboardInterrupt()),
    }.get(outcome, ValueError())

    @traced_handler
    def handler(event, context):
        with traced("inner"):
            pass
        if outcome != "return":
            raise error
        return result

    events = [http_event(headers=headers), {**http_event(), "requestContext": request_context}]
    for event in events:
        if outcome == "return":
            assert handler(event, _Context(remaining)) is result
        else:
            with pytest.raises(type(error)) as caught:
                handler(event, _Context(remaining))
            assert caught.value is error
        assert not trace.get_current_span().get_span_context().is_valid  # nothing leaked
    servers = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert len(servers) == len(events)
    count("hostile invocations", cases=len(events), untraced=len(events) - len(servers))
    for span in servers:
        assert span.end_time is not None
        assert span.parent is None or span.parent.is_remote  # never a leaked local parent
        if outcome != "return":
            assert span.attributes[names.ERROR_TYPE].endswith(type(error).__name__)
    # A malformed incoming context starts a new trace; it never turns tracing off.
    if "tracestate" in headers:  # the one well-formed traceparent among them
        assert servers[0].parent.span_id == 0xB7AD6B7169203331
        assert not servers[0].context.trace_state  # the oversized state is dropped
    else:
        assert servers[0].parent is None


# --- 7: traced() keeps no per-call state on the decorator ----------------------------------


def test_one_traced_block_entered_by_many_threads_and_tasks(sink: InMemorySender) -> None:
    from tracing import coldstart

    coldstart.configure(enabled=False)  # after init: real spans, not recorded phases
    block = traced("shared")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with traced(f"root-{i}"):
                barrier.wait()
                with block as span:
                    barrier.wait()  # all eight are inside the same block at once
                    assert trace.get_current_span() is span
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    async def task(i: int) -> None:
        async with block:
            await asyncio.sleep(0.01)
            assert trace.get_current_span().name == "shared"  # type: ignore[attr-defined]

    async def tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(8)))

    asyncio.run(tasks())
    rt = runtime.current()
    rt.delivery.flush()
    shared = [s for s in sink.spans if s.name == "shared"]
    roots = {s.context.span_id: s.name for s in sink.spans if s.name.startswith("root-")}
    assert len(shared) == 16 and len({s.context.span_id for s in shared}) == 16
    threaded = [s for s in shared if s.parent is not None]
    assert sorted(roots[s.parent.span_id] for s in threaded) == sorted(
        f"root-{i}" for i in range(8)
    )
    for s in shared:
        assert s.end_time - s.start_time > 0


def test_generator_functions_are_refused_at_decoration() -> None:
    def numbers():
        yield 1

    async def stream():
        yield 1

    for function in (numbers, stream):
        with pytest.raises(TypeError, match="generator"):
            traced("x")(function)
        with pytest.raises(TypeError, match="generator"):
            traced(function)


# --- 8, 9: secrets in query text and errors, against the real server --------------------

_SECRET = "hunter2"


def _literals() -> st.SearchStrategy[str]:
    """SQL literals of every lexical form PostgreSQL has, each carrying the secret."""
    tag = st.sampled_from(["", "pw", "pw1", "é", "_x9", "tag$"]).filter(lambda t: "$" not in t)
    body = st.text(alphabet="abc'\"-/*\\ $;\n", max_size=8)

    def standard(b: str) -> str:
        return "'" + (b + _SECRET).replace("'", "''") + "'"

    def escape(b: str) -> str:
        return "E'" + (b + _SECRET).replace("\\", "\\\\").replace("'", "\\'") + "'"

    def dollar(t: str, b: str) -> str:
        inner = (b + _SECRET).replace("$", "")
        return f"${t}${inner}${t}$"

    return st.one_of(
        body.map(standard),
        body.map(escape),
        st.builds(dollar, tag, body),
        st.just("U&'" + _SECRET + "'"),
        st.just("x'" + "ABCD" + "'"),
        st.just("b'1011'"),
        st.integers(min_value=0, max_value=10**12).map(str),
        st.just("1.5e3"),
        st.just(".5"),
    )  # (0x1F and 1_000 are PostgreSQL 16 syntax; the server here is 15)


def _comment() -> st.SearchStrategy[str]:
    text = st.text(alphabet="ab' \"$", max_size=6)
    return st.one_of(
        st.just(""),
        text.map(lambda t: f" -- don't {t} {_SECRET}\n"),
        text.map(lambda t: f" /* it's /* nested {t} */ {_SECRET} */ "),
    )


@pytest.mark.postgres
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(_literals(), _comment()), min_size=1, max_size=4), st.data())
def test_redaction_agrees_with_postgresqls_own_parser(postgres, parts, data) -> None:
    """PostgreSQL runs the statement (it is real SQL whose literals carry the secret), and
    runs our redacted text with NULL for each ?: the same columns, and no secret left."""
    from tracing.db import redact_sql

    alias = data.draw(st.sampled_from(['"it\'s"', '"a""b"', "c", '"$1$"', '"--x"']))
    columns = ", ".join(f"{lit}{comment}" for lit, comment in parts)
    statement = f"SELECT {columns}, 1 AS {alias}"
    redacted = redact_sql(statement)
    count("statements checked against PostgreSQL", cases=1, secrets_left=redacted.count(_SECRET))
    assert _SECRET not in redacted
    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
        original = conn.execute(statement.replace("%", "%%"))
        width = len(original.description)
        names_of = [c.name for c in original.description]
        replaced = conn.execute(redacted.replace("?", "NULL").replace("%", "%%"))
        assert len(replaced.description) == width
        assert [c.name for c in replaced.description][-1] == names_of[-1]  # identifiers kept


def test_redaction_keeps_placeholders_and_identifiers() -> None:
    from tracing.db import redact_sql

    statement = (
        "SELECT \"password = 'x'\", a$b FROM t -- trailing\n"
        "WHERE x = %s AND y = %(name)s AND z = $1 AND w = 'lit' /* c */"
    )
    assert redact_sql(statement) == (
        "SELECT \"password = 'x'\", a$b FROM t WHERE x = %s AND y = %(name)s AND z = $1 AND w = ?"
    )
    assert redact_sql("SELECT 'unterminated hunter2") == "SELECT ?"
    assert redact_sql("SELECT 1 /* unterminated hunter2") == "SELECT ?"


@pytest.mark.postgres
def test_a_constraint_violation_leaves_no_row_value_in_spans_or_logs(postgres, caplog) -> None:
    from tracing import coldstart
    from tracing.db import TracedConnection

    sink = capture_spans()
    coldstart.configure(enabled=False)  # after init: real spans, not recorded phases
    table = f"hostile_{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.DEBUG):
        with TracedConnection.connect(postgres.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (email text CONSTRAINT {table}_email UNIQUE)")
            conn.execute(f"INSERT INTO {table} VALUES (%s)", ("hunter2@x",))
            with pytest.raises(psycopg.errors.UniqueViolation) as caught:
                conn.execute(f"INSERT INTO {table} VALUES (%s)", ("hunter2@x",))
            assert "hunter2@x" in str(caught.value)  # the server did quote it
            conn.execute(f"DROP TABLE {table}")
        runtime.current().delivery.flush()
    failed = next(s for s in sink.spans if s.status.status_code.name == "ERROR")
    everything = repr(
        [
            (
                s.name,
                dict(s.attributes),
                s.status.description,
                [dict(e.attributes) for e in s.events],
            )
            for s in sink.spans
        ]
    )
    assert "hunter2" not in everything and "DETAIL" not in everything
    assert "hunter2" not in caplog.text
    assert failed.attributes[names.DB_RESPONSE_STATUS_CODE] == "23505"
    assert failed.attributes[names.DB_ERROR_CONSTRAINT] == f"{table}_email"
    assert "23505" in failed.status.description


def test_a_context_leaked_before_the_invocation_never_becomes_its_parent(sink) -> None:
    from opentelemetry import context as otel_context

    leaked = trace.get_tracer("user").start_span("never ended")
    token = otel_context.attach(trace.set_span_in_context(leaked))  # and never detached
    try:

        @traced_handler
        def handler(event, context):
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
        handler(http_event(), LambdaContext())
    finally:
        otel_context.detach(token)
    servers = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 2 and all(s.parent is None for s in servers)


def test_the_lexers_letter_classes_are_postgresqls() -> None:
    """The lexer's classes, written as "all but these ASCII characters" (cheap to compile),
    hold exactly what PostgreSQL's letters, digits and ``$`` do, at every code point."""
    import re

    from tracing import db

    expected = {
        db._LETTER: re.compile("[A-Za-z_\u0080-\U0010ffff]"),
        db._LETTER_OR_DIGIT: re.compile("[A-Za-z_\u0080-\U0010ffff0-9]"),
        db._WORD_CHAR: re.compile("[A-Za-z_\u0080-\U0010ffff0-9$]"),
    }
    for ours, theirs in expected.items():
        mine = re.compile(ours)
        for code in (*range(0x3000), *range(0x3000, 0x110000, 97), 0x10FFFF, 0xD800):
            char = chr(code)
            assert bool(mine.match(char)) is bool(theirs.match(char)), (ours, hex(code))
    assert db.redact_sql("SELECT $tag$x$tag$, naïve, é1$ FROM t WHERE a = 'b'") == (
        "SELECT ?, naïve, é1$ FROM t WHERE a = ?"
    )
