"""Exporters ``xray`` (AWS's OTLP endpoint, SigV4) and ``stdout-otlp`` (log-based): a local
HTTPS receiver that checks signatures as AWS would, real stdout, the official protos."""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import http.server
import io
import json
import logging
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.lambda_events import LambdaContext, http_event
from tracing import TracingConfig, names, setup_tracing, traced, traced_handler
from tracing.sigv4 import Credentials, sign_headers
from tracing.stdout import FORMAT_VERSION, MARKER, MAX_LINE_BYTES, StdoutOtlpSender
from tracing.xray import MAX_SPAN_BYTES, XraySender

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET, TOKEN = "AKIAXRAYTESTTESTTEST", "xray-test-secret", "session-token-value"


def _names(body: bytes) -> list[str]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return [s.name for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]


def test_header_signing_matches_botocore_for_a_post_with_a_body() -> None:
    body = b"\x0a\x03abc" * 100
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    now = datetime.datetime(2026, 12, 2, 1, 2, 3, tzinfo=datetime.UTC)
    for token in (None, TOKEN):
        ours = sign_headers(
            "POST",
            "xray.eu-west-1.amazonaws.com",
            "/v1/traces",
            headers,
            body,
            "eu-west-1",
            "xray",
            Credentials(KEY, SECRET, token),
            now=now,
        )
        # botocore's add_auth takes the clock's time: rebuild its signature for ours.
        request = AWSRequest(
            method="POST",
            url="https://xray.eu-west-1.amazonaws.com/v1/traces",
            data=body,
            headers={**headers, **{k: v for k, v in ours.items() if k != "Authorization"}},
        )
        request.context["timestamp"] = ours["X-Amz-Date"]
        auth = SigV4Auth(BotoCredentials(KEY, SECRET, token), "xray", "eu-west-1")
        canonical = auth.canonical_request(request)
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        scope = auth.credential_scope(request)
        signed = auth.signed_headers(auth.headers_to_sign(request))
        assert ours["Authorization"] == (
            f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature}"
        )
        assert ours["X-Amz-Date"] == "20261202T010203Z"
        assert ("X-Amz-Security-Token" in ours) == (token is not None)


class _Receiving(http.server.BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler: :meth:`body` reads the request's, :meth:`answer` replies."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers["Content-Length"]))

    def answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.contextmanager
def _capture() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A plain HTTP receiver answering 200; its URL and what it received (lower-case
    header names, body)."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(_Receiving):
        def do_POST(self) -> None:
            received.append(({k.lower(): v for k, v in self.headers.items()}, self.body()))
            self.answer(200)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


class _AwsLikeReceiver:
    """HTTPS on localhost, checking each request's SigV4 signature (service xray) the way
    AWS does: recomputed from the request as received, with the secret it knows."""

    def __init__(self, tmp: Path, *, status: int | None = None) -> None:
        from dsqltrace.pg import make_certificates

        ca, cert, key = make_certificates(tmp / "tls")
        self.ca = ca
        self.bodies: list[bytes] = []
        self.verdicts: list[bool] = []
        receiver = self

        class Handler(_Receiving):
            def do_POST(self) -> None:
                body = self.body()
                valid = receiver.verify(self.command, self.path, dict(self.headers), body)
                receiver.verdicts.append(valid)
                if valid:
                    raw = gzip.decompress(body) if self.headers.get("Content-Encoding") else body
                    receiver.bodies.append(raw)
                self.answer(status or (200 if valid else 403))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://localhost:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def verify(method: str, path: str, headers: dict[str, str], body: bytes) -> bool:
        lower = {k.lower(): v for k, v in headers.items()}
        authorization = lower.get("authorization", "")
        if not authorization.startswith(f"AWS4-HMAC-SHA256 Credential={KEY}/"):
            return False
        scope = authorization.split("Credential=")[1].split(",")[0].split("/", 1)[1]
        _, region, service, _ = scope.split("/")
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        again = AWSRequest(
            method=method,
            url=f"https://{lower['host']}{path}",
            data=body,
            headers={name: lower[name] for name in signed},
        )
        again.context["timestamp"] = lower["x-amz-date"]
        auth = SigV4Auth(
            BotoCredentials(KEY, SECRET, lower.get("x-amz-security-token")), service, region
        )
        expected = auth.signature(auth.string_to_sign(again, auth.canonical_request(again)), again)
        return service == "xray" and authorization.endswith(f"Signature={expected}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[_AwsLikeReceiver]:
    r = _AwsLikeReceiver(tmp_path)
    yield r
    r.stop()


def _xray(receiver: _AwsLikeReceiver, environ: dict[str, str], **kwargs) -> XraySender:
    tls = ssl.create_default_context(cafile=str(receiver.ca))
    return XraySender(
        "eu-west-1", endpoint=receiver.url, environ=environ, tls_context=tls, **kwargs
    )


def _invoke_three(sender) -> None:
    setup_tracing(TracingConfig(service_name="xray-test"), sender=sender)

    @traced_handler
    def handler(event, context):
        with traced("work"):
            pass
        return {"statusCode": 200}

    for _ in range(3):
        assert handler(http_event(), LambdaContext())["statusCode"] == 200


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_xray_exports_are_signed_and_accepted(receiver, compression) -> None:
    environ = {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
    }
    _invoke_three(_xray(receiver, environ, compression=compression))
    assert receiver.verdicts and all(receiver.verdicts)
    delivered = [name for body in receiver.bodies for name in _names(body)]
    assert delivered.count("GET") == 3 and delivered.count("work") == 3


def test_a_bearer_token_in_the_headers_replaces_the_signature(tmp_path: Path) -> None:
    """The endpoint's API-key option: Authorization from OTEL_EXPORTER_OTLP_HEADERS is sent
    as it is, and nothing is signed (no credentials needed)."""
    with _capture() as (url, received):
        sender = XraySender(
            "eu-west-1",
            endpoint=url,
            headers={"Authorization": "Bearer api-key-value"},
            environ={},
        )
        _invoke_three(sender)
    seen = [headers for headers, _ in received]
    assert seen and all(h["authorization"] == "Bearer api-key-value" for h in seen)
    assert not any("x-amz-date" in h for h in seen)


def test_a_wrong_secret_is_refused_by_the_receiver(receiver) -> None:
    """The receiver's check can fail: the same exports signed with another secret."""
    environ = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    _invoke_three(_xray(receiver, environ))
    assert receiver.verdicts and not any(receiver.verdicts)


@pytest.mark.parametrize("environ", [{}, {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": "x"}])
def test_missing_or_refused_credentials_warn_once_and_never_fail_the_handler(
    receiver, environ, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="dsql-lambda-tracing")
    sender = _xray(receiver, environ)
    setup_tracing(TracingConfig(service_name="xray-test"), sender=sender)

    @traced_handler
    def handler(event, context):
        return {"statusCode": 201}

    for _ in range(4):
        assert handler(http_event(), LambdaContext())["statusCode"] == 201
        from tracing.runtime import current

        rt = current()
        assert rt is not None
        rt.delivery.backoff.succeeded()  # no pause: every invocation tries again
    warnings = [r for r in caplog.records if "AWS's OTLP endpoint" in r.getMessage()]
    assert len(warnings) == 1
    assert not [r for r in caplog.records if "span export failed" in r.getMessage()]
    assert "x-secret" not in caplog.text and SECRET not in caplog.text


def test_an_oversize_span_is_cut_visibly_to_awss_limit(receiver) -> None:
    environ = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    setup_tracing(TracingConfig(service_name="xray-test"), sender=_xray(receiver, environ))

    @traced_handler
    def handler(event, context):
        with traced("big", attributes={"blob": "x" * 300_000, "small": "kept"}):
            pass
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    request = ExportTraceServiceRequest()
    request.ParseFromString(receiver.bodies[-1])
    spans = [s for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
    big = next(s for s in spans if s.name == "big")
    attributes = {a.key: a.value for a in big.attributes}
    assert len(attributes["blob"].string_value) < 5000
    assert attributes["small"].string_value == "kept"
    assert attributes[names.TRUNCATED_ATTRIBUTES].int_value == 1
    assert big.ByteSize() <= MAX_SPAN_BYTES


def test_setup_selects_xray_with_awss_endpoint_for_the_region(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "xray")
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    from tracing.runtime import current

    setup_tracing()
    rt = current()
    assert rt is not None
    sender = rt.delivery._sender._get()  # built lazily, as at the first export
    assert isinstance(sender, XraySender)
    assert sender._exporter.address == "xray.ap-southeast-2.amazonaws.com:443"


# --- stdout-otlp ---------------------------------------------------------------------
def _decode_line(line: bytes) -> list[str]:
    envelope = json.loads(line)
    assert envelope[MARKER] == FORMAT_VERSION
    assert envelope["method"] == "POST" and envelope["base64"] is True
    assert envelope["content-type"] == "application/x-protobuf"
    assert envelope["content-encoding"] == "gzip"
    return _names(gzip.decompress(base64.b64decode(envelope["payload"])))


def test_stdout_otlp_writes_one_envelope_line_per_export() -> None:
    stream = io.BytesIO()
    sender = StdoutOtlpSender(
        source="todo-api", endpoint="http://collector:4318/v1/traces", stream=stream
    )
    _invoke_three(sender)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    envelope = json.loads(lines[0])
    assert envelope["source"] == "todo-api"
    assert envelope["endpoint"] == "http://collector:4318/v1/traces"
    decoded = [sorted(set(_decode_line(line)) - {names.LAMBDA_INIT}) for line in lines]
    assert decoded == [["GET", "work"]] * 3


def test_stdout_otlp_never_writes_credentials_of_the_endpoint() -> None:
    stream = io.BytesIO()
    sender = StdoutOtlpSender(
        source="s",
        endpoint="https://user:hunter2@otlp.example/v1/traces?api_key=k3y",
        stream=stream,
    )
    _invoke_three(sender)
    out = stream.getvalue()
    assert b"hunter2" not in out and b"k3y" not in out
    assert json.loads(out.splitlines()[0])["endpoint"] == "https://otlp.example/v1/traces"


def test_stdout_otlp_splits_exports_to_fit_a_log_event() -> None:
    stream = io.BytesIO()
    sender = StdoutOtlpSender(source="s", endpoint="http://c/v1/traces", stream=stream)
    setup_tracing(TracingConfig(service_name="split"), sender=sender)
    import os

    @traced_handler
    def handler(event, context):
        for i in range(40):  # incompressible attributes: ~40 KB each
            with traced(
                f"s{i}", attributes={"noise": base64.b64encode(os.urandom(30_000)).decode()}
            ):
                pass
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    from tracing.runtime import current

    rt = current()
    assert rt is not None
    while rt.delivery.pending():  # 1.6 MB: more than one flush's worth of batches
        rt.delivery.flush(5)
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) > 1 and all(len(line) <= MAX_LINE_BYTES for line in lines)
    delivered = [name for line in lines for name in _decode_line(line)]
    expected = [f"s{i}" for i in range(40)] + ["GET", names.LAMBDA_INIT]
    assert sorted(delivered) == sorted(expected)


def test_stdout_otlp_lines_never_interleave_with_the_functions_log_lines() -> None:
    """Real stdout of a process where another thread logs while spans are exported."""
    script = f"""
import logging, sys, threading
sys.path.insert(0, {str(ROOT)!r})
from tests.lambda_events import LambdaContext, http_event
from tracing import TracingConfig, setup_tracing, traced, traced_handler
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
setup_tracing(TracingConfig(service_name="mix", exporter="stdout-otlp", delivery="inline"))
stop = threading.Event()
def chatter():
    n = 0
    while not stop.is_set():
        logging.info("user log line %d %s", n, "y" * 300)
        n += 1
threading.Thread(target=chatter).start()
@traced_handler
def handler(event, context):
    for i in range(20):
        with traced("s%d" % i, attributes={{"pad": "z" * 2000}}):
            pass
    return {{"statusCode": 200}}
for _ in range(30):
    handler(http_event(), LambdaContext())
stop.set()
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, cwd=ROOT
    ).stdout
    envelopes = users = 0
    for line in out.splitlines():
        if line.startswith(b'{"' + MARKER.encode()):
            _decode_line(line)  # a whole, valid envelope
            envelopes += 1
        else:
            assert line.startswith(b"user log line ") and line.endswith(b"y" * 300), line[:80]
            users += 1
    assert envelopes == 30 and users > 0


def test_stdout_otlp_costs_no_collector(monkeypatch, capfd) -> None:
    """Selected by OTEL_TRACES_EXPORTER, it writes to the process's stdout."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "stdout-otlp")
    setup_tracing()

    @traced_handler
    def handler(event, context):
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    line = capfd.readouterr().out.strip().splitlines()[-1].encode()
    assert _decode_line(line) == [names.LAMBDA_INIT, "GET"]


def test_processor_batches_stay_within_awss_request_limits() -> None:
    from tracing.export import MAX_BATCH_BYTES, MAX_BATCH_SPANS

    assert MAX_BATCH_SPANS <= 10_000 and MAX_BATCH_BYTES <= 5_000_000


def test_stdout_otlp_through_the_local_stack_reaches_the_collector() -> None:
    """The Todo functions with exporter stdout-otlp in the emulator: their log lines are
    forwarded by its log subscription, and every request's spans reach the collector."""
    import httpx

    from tests.stack_fixture import new_stack

    stack = new_stack(env={"OTEL_TRACES_EXPORTER": "stdout-otlp"})
    try:
        ids = []
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            for i in range(3):
                created = client.post("/todos", json={"name": f"via logs {i}"})
                assert created.status_code == 201
                ids.append(created.headers["x-amzn-requestid"])
                assert client.get("/todos?limit=10").status_code == 200

        def all_there(spans) -> bool:
            seen = {s.attributes.get("faas.invocation_id") for s in spans}
            return set(ids) <= seen and any(s.name == "GET /todos" for s in spans)

        spans = stack.wait_for_spans(all_there, timeout=20)
        assert all_there(spans)
        assert {s.name for s in spans} >= {"POST /todos", "GET /todos", names.LAMBDA_INIT}
        assert {s.via for s in spans} == {"logs"}  # marked, so the report does not call them late
        log = (
            (stack.folder / "emulator.log").read_text()
            if (stack.folder / "emulator.log").exists()
            else ""
        )
        assert MARKER not in log  # forwarded, not logged
    finally:
        stack.stop()


def test_the_forwarder_posts_each_envelope_of_a_subscription_event(monkeypatch) -> None:
    """tracing.forwarder as CloudWatch Logs would call it: lines of two functions, one
    of them not an envelope; the API key comes from FORWARD_HEADERS, not the logs."""
    from tracing import forwarder

    stream = io.BytesIO()
    _invoke_three(StdoutOtlpSender(source="s", endpoint="http://unused/v1/traces", stream=stream))
    lines = stream.getvalue().decode().splitlines()
    messages = ["START RequestId: abc Version: $LATEST", *lines, "plain log line {not json"]
    data = {"logEvents": [{"id": str(i), "message": m} for i, m in enumerate(messages)]}
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(data).encode()))}}
    with _capture() as (url, received):
        monkeypatch.setenv("FORWARD_ENDPOINT", url)
        monkeypatch.setenv("FORWARD_HEADERS", "dd-api-key=forwarder-key")
        assert forwarder.handler(event, None) == {"forwarded": 3, "refused": 0, "unsent": 0}
    assert len(received) == 3
    for headers, body in received:
        assert headers["dd-api-key"] == "forwarder-key"
        assert headers["content-encoding"] == "gzip"
        assert "GET" in _names(gzip.decompress(body))
    assert "forwarder-key" not in "".join(lines)


def test_stdout_otlp_with_a_text_only_stdout(monkeypatch) -> None:
    """A framework may replace sys.stdout with a text stream that has no binary buffer."""
    text = io.StringIO()
    monkeypatch.setattr(sys, "stdout", text)
    _invoke_three(StdoutOtlpSender(source="s", endpoint="http://c/v1/traces"))
    lines = text.getvalue().splitlines()
    assert len(lines) == 3 and all("GET" in _decode_line(line.encode()) for line in lines)


def test_the_forwarder_stays_within_the_invocations_time_against_a_silent_collector(
    monkeypatch,
) -> None:
    """A collector that accepts connections and never answers: the first post is cut at
    the invocation's deadline (less the margin), the rest are not tried."""
    import socket as socket_module

    from tracing import forwarder

    stream = io.BytesIO()
    _invoke_three(StdoutOtlpSender(source="s", endpoint="http://unused/v1/traces", stream=stream))
    messages = stream.getvalue().decode().splitlines()
    data = {"logEvents": [{"id": str(i), "message": m} for i, m in enumerate(messages)]}
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(data).encode()))}}
    silent = socket_module.create_server(("127.0.0.1", 0))
    accepted: list = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return int((forwarder.MARGIN_S + 0.3) * 1000)

    monkeypatch.setenv("FORWARD_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}/v1/traces")
    try:
        assert forwarder.handler(event, Context()) == {"forwarded": 0, "refused": 1, "unsent": 2}
    finally:
        silent.close()
