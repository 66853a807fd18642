"""Delivery modes: after the response through an internal extension, inline, periodic.

In-process tests drive the toolkit against a small Extensions API of their own
(to make it refuse, stall or fail); end-to-end tests run the real awslambdaric
in the emulator, whose Extensions API, freeze rule, shutdown and CPU limits
are what they check.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.trace import SpanKind

from dsqltrace.emulator import limits
from dsqltrace.report.runs import read_spans
from tests.agent import ROOT
from tests.lambda_events import LambdaContext, http_event
from tests.support import eventually, eventually_async
from tests.test_emulator import get, run_emulator
from tracing import (
    TracingConfig,
    runtime,
    setup_tracing,
    shutdown_tracing,
    traced,
    traced_handler,
)
from tracing.testing import InMemorySender

LOGGER = "dsql-lambda-tracing"


class FakeExtensionsApi:
    """An Extensions API on loopback: registers, hands out the events a test pushes, and
    records when the extension came back for the next one.  ``fault``: ``refuse`` (403 to
    registration), ``stall`` (registration never answered), ``fail-next`` (500 to next)."""

    def __init__(self, fault: str = "") -> None:
        self.fault = fault
        self.registrations = 0
        self.events: queue.Queue[dict] = queue.Queue()
        self.next_calls: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(
                    next(
                        (
                            h.split(b":")[1]
                            for h in head.split(b"\r\n")
                            if h.lower().startswith(b"content-length")
                        ),
                        b"0",
                    )
                )
                body, data = rest[:length], rest[length:]
                line = head.split(b"\r\n")[0].decode()
                conn.sendall(self._answer(line, body))

    def _answer(self, line: str, body: bytes) -> bytes:
        if "/register" in line:
            self.registrations += 1
            if self.fault == "stall":
                time.sleep(5)
            if self.fault == "slow-register":
                time.sleep(0.3)
            if self.fault == "refuse":
                return _http(403, b'{"errorType":"Extension.InvalidStateTransition"}')
            return _http(200, b"{}", b"Lambda-Extension-Identifier: ext-1\r\n")
        if "/event/next" in line:
            self.next_calls.append(time.monotonic())
            if self.fault == "fail-next":
                return _http(500, b'{"errorType":"Extension.Unknown"}')
            event = self.events.get()
            return _http(200, json.dumps(event).encode())
        return _http(404, b"")

    def invoke(self, request_id: str, *, deadline_s: float = 30.0) -> None:
        self.events.put(
            {
                "eventType": "INVOKE",
                "requestId": request_id,
                "deadlineMs": int((time.time() + deadline_s) * 1000),
            }
        )

    def close(self) -> None:
        self._listener.close()


def _http(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra) + body


def _traced(sink: InMemorySender, api: FakeExtensionsApi | None, monkeypatch, **config):
    if api is not None:
        monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    else:
        monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    setup_tracing(TracingConfig(service_name="test", **config), sender=sink)
    delivered_at_return: list[int] = []

    @traced_handler
    def handler(event, context):
        return {"statusCode": 200}

    def invoke() -> None:
        context = LambdaContext()
        if api is not None:
            api.invoke(context.aws_request_id)
        handler(http_event(), context)
        delivered_at_return.append(len(sink.spans))

    return invoke, delivered_at_return


# --- in process -------------------------------------------------------------------------


def test_after_response_delivers_after_the_handler_returns_and_before_next(monkeypatch) -> None:
    api = FakeExtensionsApi()
    sink = InMemorySender()
    try:
        invoke, at_return = _traced(sink, api, monkeypatch)
        assert runtime.current().mode.name == "after-response"
        eventually(lambda: len(api.next_calls) == 1)  # the extension waits for its first event
        for i in range(3):
            invoke()
            eventually(lambda i=i: len(api.next_calls) == i + 2)  # next only after delivery
        roots = [s for s in sink.spans if s.kind is SpanKind.SERVER]
        assert len(roots) == 3
        assert at_return[0] == 0  # the handler returned before its spans were delivered
        assert api.registrations == 1
        assert setup_tracing(TracingConfig(service_name="again")).service_name == "test"
        assert api.registrations == 1  # a second setup registers nothing
    finally:
        shutdown_tracing()
        api.close()


@pytest.mark.parametrize("fault", ["refuse", "stall", "none"])
def test_without_a_working_extensions_api_delivery_is_inline(monkeypatch, caplog, fault) -> None:
    api = FakeExtensionsApi(fault) if fault != "none" else None
    if fault == "none":  # nothing listens at the address at all
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", f"127.0.0.1:{s.getsockname()[1]}")
    sink = InMemorySender()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            started = time.monotonic()
            if api is not None:
                monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
            setup_tracing(TracingConfig(service_name="test"), sender=sink)
            held_init = time.monotonic() - started
        rt = runtime.current()
        assert rt.mode.name == "inline"
        warnings = [r for r in caplog.records if "delivering inline" in r.getMessage()]
        assert len(warnings) == 1

        @traced_handler
        def handler(event, context):
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
        assert [s.kind for s in sink.spans].count(SpanKind.SERVER) == 1  # before the return
    finally:
        shutdown_tracing()
        if api is not None:
            api.close()
    # Registration holds init for a bounded few milliseconds (50 ms), whatever the API does.
    assert held_init < 0.5, held_init


def test_a_registration_answered_late_still_calls_next(monkeypatch, caplog) -> None:
    """Init stops waiting after 50 ms, but the API registered the extension all the same:
    Lambda would wait for its next before every freeze.  The toolkit answers every event."""
    api = FakeExtensionsApi("slow-register")
    sink = InMemorySender()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            invoke, at_return = _traced(sink, api, monkeypatch)
        assert runtime.current().mode.name == "inline"
        eventually(lambda: len(api.next_calls) == 1)  # registered late, waiting for an event
        for i in range(3):
            invoke()
            eventually(lambda i=i: len(api.next_calls) == i + 2)  # each event answered
        assert at_return == [2, 3, 4]  # delivery inline all along
    finally:
        shutdown_tracing()
        api.close()


def test_when_the_extension_thread_dies_delivery_goes_inline_with_one_warning(
    monkeypatch, caplog
) -> None:
    api = FakeExtensionsApi("fail-next")
    sink = InMemorySender()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            invoke, at_return = _traced(sink, api, monkeypatch)
            mode = runtime.current().mode
            eventually(lambda: not mode.alive)
            for _ in range(3):
                invoke()
        assert at_return == [2, 3, 4]  # init + root, then one root each: inline
        warnings = [r for r in caplog.records if "extension stopped" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        shutdown_tracing()
        api.close()


def test_periodic_delivers_once_per_interval(monkeypatch) -> None:
    sink = InMemorySender()
    try:
        invoke, _ = _traced(sink, None, monkeypatch, delivery="periodic,60000")
        assert runtime.current().mode.name == "periodic"
        for _ in range(20):
            invoke()
        assert sink.calls == 0  # the interval has not passed: nothing sent yet
        runtime.current().delivery.flush()
        assert [s.kind for s in sink.spans].count(SpanKind.SERVER) == 20
    finally:
        shutdown_tracing()


def test_outside_lambda_delivery_is_inline(monkeypatch) -> None:
    sink = InMemorySender()
    try:
        invoke, at_return = _traced(sink, None, monkeypatch)
        assert runtime.current().mode.name == "inline"
        invoke()
        assert at_return == [2]
    finally:
        shutdown_tracing()


# --- in the emulator (real awslambdaric) ---------------------------------------------------


def _records(path: Path) -> list[dict]:
    return [
        r
        for r in (json.loads(line) for line in path.read_text().splitlines())
        if r.get("record") == "invocation"
    ]


def test_no_freeze_until_the_extension_has_called_next(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    records = tmp_path / "records.jsonl"

    async def scenario(url: str, emulator) -> int:
        assert (await get(url)).status_code == 200
        # The extension still sleeps after the response: the environment is not idle, so
        # this request needs an environment of its own (a cold start).
        assert (await get(url)).status_code == 200
        await eventually_async(lambda: marker.exists() and len(marker.read_text().split("\n")) > 2)
        return emulator.functions["fn"].created

    created, _ = run_emulator(
        "tests.apps.extended.handler",
        scenario,
        records=records,
        env={
            "EXTENDED_APP": "sleepy-extension",
            "EXTENSION_SLEEP_S": "0.3",
            "MARKER_FILE": str(marker),
        },
    )
    assert created == 2
    first = _records(records)[0]
    written_ns = int(marker.read_text().split("\n")[0].split()[1])
    assert first["response_ns"] < written_ns <= first["done_ns"]  # it ran after the response
    # Its 0.3 s sleep starts at the INVOKE event, a little before the response.
    assert first["post_runtime_ms"] >= 250
    assert first["billed_ms"] >= 300


def _collector(out: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    from bench.coldstart import start_collector

    process, port = start_collector(out, *args)
    return process, f"http://127.0.0.1:{port}"


def test_a_slow_collector_does_not_delay_the_response(tmp_path: Path) -> None:
    spans_file, records = tmp_path / "spans.jsonl", tmp_path / "records.jsonl"
    collector, endpoint = _collector(spans_file, "--fault", "slow", "--delay-ms", "20")

    async def scenario(url: str, emulator) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(8):
                assert (await client.get(url + "/")).status_code == 200

    try:
        run_emulator(
            "tests.apps.extended.handler",
            scenario,
            records=records,
            env={"EXTENDED_APP": "traced", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
            # A full vCPU: at 256 MB a handler that outgrows its 100 ms quota period waits
            # for the next one, and that wait is throttling, not delivery.
            memory_mb=1769,
        )
        spans = eventually(
            lambda: [s for s in read_spans(spans_file) if s.is_root] if spans_file.exists() else []
        )
        eventually(lambda: len([s for s in read_spans(spans_file) if s.is_root]) == 8)
    finally:
        collector.terminate()
        collector.wait(10)
    warm = _records(records)[1:]
    assert all(r["post_runtime_ms"] >= 20 for r in warm)  # the export's 20 ms are billed...
    # ...and are not in the response: the handler's part is shorter than the export's (by
    # medians: on a loaded machine one invocation can stall for scheduling reasons).
    handler_ms = [(r["response_ns"] - r["delivered_ns"]) / 1e6 for r in warm]
    post_ms = [r["post_runtime_ms"] for r in warm]
    assert statistics.median(handler_ms) < statistics.median(post_ms), (handler_ms, post_ms)
    by_id = {r["request_id"]: r for r in _records(records)}
    roots = [s for s in read_spans(spans_file) if s.is_root]
    assert len(roots) == 8 and spans
    assert all(
        s.received_ns <= by_id[str(s.attributes["faas.invocation_id"])]["done_ns"] for s in roots
    )


def test_under_awslambdaric_the_runtime_drives_delivery_and_no_thread_waits(
    tmp_path: Path,
) -> None:
    """awslambdaric runs the process: after each posted response its own thread delivers,
    reads the extension's event and calls the extension's ``next``; no extension thread
    of the toolkit's waits for events (one would wake at every INVOKE, in the handler's
    time).  The environment still freezes only after that ``next``."""
    spans_file, records = tmp_path / "spans.jsonl", tmp_path / "records.jsonl"
    collector, endpoint = _collector(spans_file)

    async def scenario(url: str, emulator) -> list[dict]:
        return [(await get(url)).json() for _ in range(4)]

    try:
        seen, _ = run_emulator(
            "tests.apps.extended.handler",
            scenario,
            records=records,
            env={"EXTENDED_APP": "traced", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        )
        eventually(
            lambda: spans_file.exists() and sum(1 for s in read_spans(spans_file) if s.is_root) == 4
        )
    finally:
        collector.terminate()
        collector.wait(10)
    for answer in seen:
        assert answer["mode"] == {"name": "after-response", "driven": True}
        assert not any(name.endswith("-extension") for name in answer["threads"])
    by_id = {r["request_id"]: r for r in _records(records)}
    for root in (s for s in read_spans(spans_file) if s.is_root):
        record = by_id[str(root.attributes["faas.invocation_id"])]
        assert record["response_ns"] < root.received_ns <= record["done_ns"]  # after, before


def test_registering_after_init_is_refused() -> None:
    async def scenario(url: str, emulator) -> dict:
        return (await get(url)).json()

    seen, _ = run_emulator("tests.apps.extended.late_register", scenario)
    assert "403" in seen["refused"] and "InvalidStateTransition" in seen["refused"]


def test_an_unwrapped_handler_does_not_hold_the_environment(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"

    async def scenario(url: str, emulator) -> None:
        for _ in range(3):
            assert (await get(url)).status_code == 200

    run_emulator(
        "tests.apps.extended.handler", scenario, records=records, env={"EXTENDED_APP": "untraced"}
    )
    # The extension calls next at once: far from the 1 s it would wait for a wrapped handler.
    assert all(r["post_runtime_ms"] < 500 for r in _records(records))


@pytest.mark.parametrize("runtime_name", ["python3.13", "python3.11"])
def test_sigterm_delivers_what_periodic_mode_kept(tmp_path: Path, runtime_name) -> None:
    """Retired after 1 s idle: SIGTERM, then 500 ms, then SIGKILL.  In both of awslambdaric's
    modes (3.12+: it waits for invocations on a thread; 3.11: in the main thread, where a
    Python signal handler cannot run), because the toolkit's own thread is woken by the
    signal, whichever thread the kernel gave it to."""
    spans_file = tmp_path / "spans.jsonl"
    collector, endpoint = _collector(spans_file)

    async def scenario(url: str, emulator) -> None:
        for _ in range(5):
            assert (await get(url)).status_code == 200
        await eventually_async(lambda: not emulator.functions["fn"].environments, timeout=10)

    try:
        _, log = run_emulator(
            "tests.apps.extended.handler",
            scenario,
            idle_timeout_s=1.0,
            runtime=runtime_name,
            env={
                "EXTENDED_APP": "traced",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "DSQLTRACE_DELIVERY": "periodic,600000",
            },
        )
        eventually(
            lambda: spans_file.exists() and sum(1 for s in read_spans(spans_file) if s.is_root) >= 5
        )
    finally:
        collector.terminate()
        collector.wait(10)
    roots = [s for s in read_spans(spans_file) if s.is_root]
    assert len(roots) == 5  # none was sent before SIGTERM (600 s interval), none was lost
    assert "retired" in log and "exited with code 143 after SIGTERM" in log  # within 500 ms


def test_256_mb_gets_a_seventh_of_a_cpu() -> None:
    reason = limits.unavailable()
    if reason is not None:
        pytest.skip(f"no CPU limits on this machine ({reason}): nothing to measure")

    def wall(memory_mb: int) -> float:
        async def scenario(url: str, emulator) -> float:
            await get(url)  # the cold start: init runs unthrottled, as Lambda's burst
            return min([(await get(url)).json()["wall_s"] for _ in range(3)])

        seconds, _ = run_emulator(
            "tests.apps.extended.cpu", scenario, memory_mb=memory_mb, env={"CPU_MS": "40"}
        )
        return seconds

    full, small = wall(1769), wall(256)
    ratio = small / full
    assert 1769 / 256 * 0.6 < ratio < 1769 / 256 * 1.5, (full, small, ratio)


# --- Lambda Managed Instances ------------------------------------------------------------


def test_managed_instances_deliver_in_the_background_without_registering(monkeypatch) -> None:
    """AWS_LAMBDA_MAX_CONCURRENCY set: no INVOKE registration (there are no such events),
    the handler never waits, and a thread delivers within the interval."""
    api = FakeExtensionsApi()
    sink = InMemorySender()
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "4")
    try:
        invoke, at_return = _traced(sink, api, monkeypatch, delivery="periodic,200")
        mode = runtime.current().mode
        assert mode.name == "background"
        for _ in range(3):
            invoke()
        assert at_return == [0, 0, 0]  # nothing was delivered by the handlers
        # The background thread's interval, not an invocation, sent them.
        eventually(lambda: [s.kind for s in sink.spans].count(SpanKind.SERVER) == 3, timeout=5)
        assert api.registrations == 0 and api.next_calls == []
    finally:
        shutdown_tracing()
        api.close()


def test_managed_instances_send_a_full_batch_at_once(monkeypatch) -> None:
    from tracing.export import MAX_BATCH_SPANS

    sink = InMemorySender()
    monkeypatch.setenv("AWS_LAMBDA_MAX_CONCURRENCY", "2")
    try:
        setup_tracing(TracingConfig(service_name="t", delivery="periodic,600000"), sender=sink)

        @traced_handler
        def handler(event, context):
            for _ in range(MAX_BATCH_SPANS):
                with traced("item"):
                    pass
            return {"statusCode": 200}

        handler(http_event(), LambdaContext())
        eventually(lambda: len(sink.spans) >= MAX_BATCH_SPANS, timeout=5)  # not in 10 minutes
    finally:
        shutdown_tracing()


def test_sigterm_delivers_what_background_delivery_kept(tmp_path: Path) -> None:
    """A worker process of a Managed Instances environment, stopped with SIGTERM: what the
    background thread had not sent yet reaches the collector before it exits."""
    spans_file = tmp_path / "spans.jsonl"
    collector, endpoint = _collector(spans_file)
    script = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.agent import ROOT
from tests.lambda_events import LambdaContext, http_event
from tracing import setup_tracing, traced_handler
setup_tracing()

@traced_handler
def handler(event, context):
    return {{"statusCode": 200}}

handler(http_event(), LambdaContext())
print("invoked", flush=True)
time.sleep(60)
"""
    env = {
        **os.environ,
        "AWS_LAMBDA_MAX_CONCURRENCY": "2",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9",
        "DSQLTRACE_DELIVERY": "periodic,600000",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "lmi-worker",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "invoked"
        assert not spans_file.exists() or not read_spans(spans_file)  # kept for later
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 128 + signal.SIGTERM
        roots = eventually(
            lambda: [s for s in read_spans(spans_file) if s.is_root] if spans_file.exists() else []
        )
        assert [s.service for s in roots] == ["lmi-worker"]
    finally:
        worker.kill()
        collector.terminate()
        collector.wait(10)
