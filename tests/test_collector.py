"""The local collector, fed by the real OpenTelemetry SDK exporter, the toolkit's, and raw JSON."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from dsqltrace.pg import free_port
from tests.agent import ROOT
from tests.support import eventually, eventually_async
from tracing.otlp import OtlpHttpExporter


@pytest.fixture
def collector(tmp_path: Path):
    port = free_port()
    out = tmp_path / "spans.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "dsqltrace.collector", "--port", str(port), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert "listening" in process.stdout.readline()
    yield f"http://127.0.0.1:{port}", out
    process.terminate()
    process.wait(10)


def stored(out: Path, expected: int | None = None) -> list[dict]:
    """The stored requests; waits for ``expected`` of them first (storing follows the answer)."""

    def lines() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    if expected is not None:
        eventually(lambda: len(lines()) >= expected, timeout=5)
    return [json.loads(line) for line in lines()]


def post(url: str, body: bytes, content_type: str, **headers: str) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def spans_from_sdk(exporter) -> None:
    provider = TracerProvider(resource=Resource({"service.name": "sdk-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent") as parent:
        parent.set_attribute("answer", 42)
        with tracer.start_as_current_span("child"):
            pass
    provider.shutdown()


def test_official_sdk_exporter_protobuf(collector) -> None:
    url, out = collector
    spans_from_sdk(OTLPSpanExporter(endpoint=f"{url}/v1/traces"))
    requests = stored(out, expected=2)
    spans = [
        s
        for r in requests
        for rs in r["request"]["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    assert sorted(s["name"] for s in spans) == ["child", "parent"]
    parent = next(s for s in spans if s["name"] == "parent")
    child = next(s for s in spans if s["name"] == "child")
    assert len(parent["traceId"]) == 32 and len(parent["spanId"]) == 16  # hex, as OTLP JSON
    assert child["parentSpanId"] == parent["spanId"]
    assert parent["attributes"] == [{"key": "answer", "value": {"intValue": "42"}}]
    assert all(r["received_ns"] > 0 for r in requests)


def test_toolkit_exporter_with_gzip(collector) -> None:
    url, out = collector

    class Sender:
        def __init__(self) -> None:
            self.exporter = OtlpHttpExporter(f"{url}/v1/traces", compression="gzip")

        def export(self, spans):
            self.exporter.export(spans, timeout=2)
            from opentelemetry.sdk.trace.export import SpanExportResult

            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self.exporter.close()

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    spans_from_sdk(Sender())
    assert len(stored(out, expected=2)) == 2


def test_json_bodies_and_protocol_errors(collector) -> None:
    url, out = collector
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": []},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "json-span",
                                "kind": 2,
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, answer, content_type = post(
        f"{url}/v1/traces", json.dumps(body).encode(), "application/json"
    )
    assert (status, answer, content_type) == (200, b"{}", "application/json")
    status, answer, _ = post(
        f"{url}/v1/traces",
        gzip.compress(json.dumps(body).encode()),
        "application/json",
        **{"Content-Encoding": "gzip"},
    )
    assert status == 200
    assert [r["request"] for r in stored(out, expected=2)] == [body, body]
    status, answer, _ = post(f"{url}/v1/traces", b"\xff\x00garbage", "application/x-protobuf")
    assert status == 400 and json.loads(answer)["code"] == 3
    assert post(f"{url}/v1/traces", b"{", "application/json")[0] == 400
    assert post(f"{url}/v1/traces", b"x", "text/plain")[0] == 415
    assert post(f"{url}/v1/metrics", b"", "application/x-protobuf")[0] == 404
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{url}/v1/traces", timeout=5)
    assert caught.value.code == 405
    # A third good request is a barrier: once it is stored, anything the bad ones would have
    # stored is too (requests are stored in order).
    assert post(f"{url}/v1/traces", json.dumps(body).encode(), "application/json")[0] == 200
    assert [r["request"] for r in stored(out, expected=3)] == [body, body, body]


def test_requests_are_kept_until_idle_or_over_budget(tmp_path: Path, monkeypatch) -> None:
    """Answers come first; JSON is written once the collector is idle, or sooner when the
    kept bodies exceed the byte budget, and nothing is lost either way."""
    import asyncio

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from dsqltrace import collector as module
    from dsqltrace.httpserver import HttpRequest

    memory = InMemorySpanExporter()
    spans_from_sdk(memory)
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    headers = {"content-type": "application/x-protobuf"}

    async def scenario(budget: int, count: int) -> tuple[int, int, int]:
        monkeypatch.setattr(module, "MAX_PENDING_BYTES", budget)
        out = tmp_path / f"spans-{budget}.jsonl"
        collector = module.Collector(out)
        for _ in range(count):
            answer = collector.handle(HttpRequest("POST", "/v1/traces", headers, body))
            assert answer.status == 200
        await asyncio.sleep(0)  # what is due at once runs (over budget)
        await asyncio.sleep(0.01)
        written_before_idle = len(out.read_text().splitlines())
        await eventually_async(lambda: len(out.read_text().splitlines()) >= count, timeout=5)
        written_after_idle = len(out.read_text().splitlines())
        collector.close()
        return written_before_idle, written_after_idle, collector.spans

    before, after, spans = asyncio.run(scenario(budget=64 * 1024 * 1024, count=20))
    assert (before, after, spans) == (0, 20, 40)  # kept while busy, all written when idle
    before, after, spans = asyncio.run(scenario(budget=len(body) * 4, count=20))
    assert before > 0 and after == 20 and spans == 40  # over budget: written without waiting
