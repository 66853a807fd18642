"""Where one invocation's tracing CPU goes, step by step, in-process and warm.

    python -m bench.exportcost [--invocations 5000] [--out bench/results/exportcost.md]

The handler of ``bench/apps/emulated.py`` without its wait (three spans: the
invocation, a business span, a CLIENT span) is invoked in a loop by a fresh
process per row, with nothing else in the process: no database, no other
I/O.  Each row adds one step of an ``inline`` delivery to the one before, so
the differences say what each step costs:

- untraced (``OTEL_SDK_DISABLED=true``);
- spans only (``OTEL_TRACES_EXPORTER=none``);
- + the processor's flush, with encoding and sending replaced by nothing;
- + encoding the OTLP request (sending still replaced by nothing);
- + sending it to a receiver that answers at once (``bench/receiver.py``),
  over the exporter's kept-alive connection: the full ``inline`` export.

A last row times the loopback round trip alone (``HttpConnection.request`` of
a body the size of the three spans' request), as its own baseline.  Figures
are user + system CPU per invocation from ``getrusage``, medians of five
repetitions; they are ratios of one run, not absolute truths (this machine is
noisy).

The same code costs more after a wait than hot: a second table times one span
(started as the current span, then ended) with nothing inside it, around a
loopback round trip, and around an ``INSERT`` into PostgreSQL (the benchmarks'
embedded server), each against the same wait without the span.  That is why
an invocation inside a busy process, its caches cold after a database round
trip, costs more than these rows: ``bench.delivery`` measures that.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "exportcost.md"
#: Rows: label, environment, which steps of the export are replaced by nothing.
ROWS: list[tuple[str, dict[str, str], str]] = [
    ("untraced", {"OTEL_SDK_DISABLED": "true"}, ""),
    ("spans only", {"OTEL_TRACES_EXPORTER": "none"}, ""),
    ("+ flush (no encoding, no sending)", {}, "encode,post"),
    ("+ encoding", {}, "post"),
    ("+ sending: the full inline export", {}, ""),
]
REPEATS = 5
#: Back-to-back pairs (the wait without, then with the span) per row of the second table.
WAIT_PAIRS = 15


def _child(replaced: str, invocations: int) -> dict[str, float]:
    """Run in the measured process: set up, warm up, then time the loop."""
    from bench import driver
    from tracing import otlp

    if "post" in replaced:
        otlp.OtlpHttpExporter.post = lambda self, body, deadline: None  # type: ignore[method-assign]
    if "encode" in replaced:
        otlp._encode = lambda spans, cache: (b"", 0)  # type: ignore[assignment]

    from opentelemetry.trace import SpanKind

    from tracing import setup_tracing, traced, traced_handler

    setup_tracing()

    @traced_handler(routes=["/todos"])
    def handler(event: dict, context: object) -> dict:
        with traced("Save Todo"), traced("INSERT todos", kind=SpanKind.CLIENT):
            pass
        return {"statusCode": 201, "body": "{}"}

    for _ in range(200):
        handler(driver.event(), driver.Context())

    def batch() -> Callable[[], None]:
        calls = [(driver.event(), driver.Context()) for _ in range(invocations)]

        def run() -> None:
            for event, context in calls:
                handler(event, context)

        return run

    return _cpu_per_call(batch, invocations)


def _loopback_request() -> bytes:
    """An OTLP POST with a body the size of the three spans' request (1,500 bytes)."""
    body = b"\0" * 1500
    return (
        b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-protobuf\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )


def _round_trip(port: int, invocations: int) -> dict[str, float]:
    """The loopback round trip alone: one request of about three spans' size each."""
    from tracing.transport import HttpConnection

    request = _loopback_request()
    conn = HttpConnection("127.0.0.1", port)
    for _ in range(200):
        conn.request(request, time.monotonic() + 1.0)

    def run() -> None:
        for _ in range(invocations):
            conn.request(request, time.monotonic() + 1.0)

    try:
        return _cpu_per_call(lambda: run, invocations)
    finally:
        conn.close()


def _cpu_of(run: Callable[[], None], calls: int) -> tuple[float, float]:
    """User and system CPU (µs) per call of one timed ``run()`` of ``calls`` calls."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (
        (after.ru_utime - before.ru_utime) / calls * 1e6,
        (after.ru_stime - before.ru_stime) / calls * 1e6,
    )


def _cpu_per_call(batch: Callable[[], Callable[[], None]], calls: int) -> dict[str, float]:
    """User and system CPU (µs) per call, medians of :data:`REPEATS` timed runs of what
    ``batch()`` prepares (the preparing is not timed)."""
    runs = [_cpu_of(batch(), calls) for _ in range(REPEATS)]
    return {
        "user": statistics.median(u for u, _ in runs),
        "system": statistics.median(s for _, s in runs),
    }


def measure(invocations: int) -> list[tuple[str, dict[str, float]]]:
    """Each row's CPU per invocation, each in a fresh process, against one receiver."""
    from bench.delivery import _receiver

    receiver, port = _receiver(0)
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
        "PYTHONPATH": str(ROOT),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "bench-exportcost",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "DSQLTRACE_DELIVERY": "inline",
    }
    results = []
    try:
        for label, extra, replaced in ROWS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.exportcost", "--child", replaced, str(invocations)],
                cwd=ROOT,
                env={**env, **extra},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results.append((label, json.loads(out.strip().splitlines()[-1])))
        results.append(("the loopback round trip alone", _round_trip(port, invocations)))
    finally:
        receiver.terminate()
        receiver.wait(10)
    return results


def _wait_child(port: int, database_url: str, calls: int) -> list[tuple[str, float, float, float]]:
    """Run in the measured process: each wait's CPU per call without and with a span
    around it, and the span's (the median difference of back-to-back pairs)."""
    import uuid

    import psycopg
    from opentelemetry import trace

    from tracing import setup_tracing
    from tracing.transport import HttpConnection

    setup_tracing()
    tracer = trace.get_tracer("bench.exportcost")
    request = _loopback_request()
    http = HttpConnection("127.0.0.1", port)
    db = psycopg.connect(database_url, autocommit=True)
    insert = "INSERT INTO bench_todos (id, name) VALUES (%s, %s)"
    waits: list[tuple[str, Callable[[], object]]] = [
        ("nothing", lambda: None),
        ("a loopback HTTP round trip", lambda: http.request(request, time.monotonic() + 1.0)),
        ("an INSERT into PostgreSQL", lambda: db.execute(insert, (uuid.uuid4(), "bench"))),
    ]

    def loop(wait: Callable[[], object], spanned: bool) -> Callable[[], None]:
        def run() -> None:
            if spanned:
                for _ in range(calls):
                    with tracer.start_as_current_span("bench"):
                        wait()
            else:
                for _ in range(calls):
                    wait()

        return run

    def cpu(run: Callable[[], None]) -> float:
        return sum(_cpu_of(run, calls))

    rows = []
    for label, wait in waits:
        bare, spanned = loop(wait, False), loop(wait, True)
        bare()  # warm up
        spanned()
        pairs = [(cpu(bare), cpu(spanned)) for _ in range(WAIT_PAIRS)]
        rows.append(
            (
                label,
                statistics.median(b for b, _ in pairs),
                statistics.median(s for _, s in pairs),
                statistics.median(s - b for b, s in pairs),
            )
        )
    http.close()
    db.close()
    return rows


def measure_waits(calls: int) -> list[tuple[str, float, float, float]]:
    """One span's CPU hot and after each wait, in a fresh process."""
    from bench import coldstart
    from bench.delivery import _receiver

    pg = coldstart.bench_database()
    receiver, port = _receiver(0)
    try:
        env = {
            **coldstart.base_env(pg.url(), f"http://127.0.0.1:{port}"),
            "OTEL_TRACES_EXPORTER": "none",
        }
        out = subprocess.run(
            [sys.executable, "-m", "bench.exportcost", "--wait-child", str(port), str(calls)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        receiver.terminate()
        receiver.wait(10)
        pg.stop()
    rows = json.loads(out.strip().splitlines()[-1])
    return [(str(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in rows]


def render(results: list[tuple[str, dict[str, float]]], invocations: int) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}), "
        f"`python -m bench.exportcost --invocations {invocations}`: user + system CPU per "
        f"invocation, medians of {REPEATS} repetitions, one process per row.",
        "",
        "| step | user (µs) | system (µs) | total (µs) | added by the step (µs) |",
        "|---|---|---|---|---|",
    ]
    previous: float | None = None
    for label, cpu in results:
        total = cpu["user"] + cpu["system"]
        alone = label.startswith("the loopback")
        added = "–" if previous is None or alone else f"{total - previous:+.1f}"
        lines.append(
            f"| {label} | {cpu['user']:.1f} | {cpu['system']:.1f} | {total:.1f} | {added} |"
        )
        if not alone:
            previous = total
    return "\n".join(lines)


def render_waits(rows: list[tuple[str, float, float, float]], calls: int) -> str:
    lines = [
        f"One span (started as the current span, then ended) around a wait: {WAIT_PAIRS} "
        f"back-to-back pairs of {calls} calls, the wait without the span then with it, one "
        "process; medians, the span's CPU the median of the pairs' differences:",
        "",
        "| inside the span | the wait alone (µs) | with the span (µs) | the span (µs) |",
        "|---|---|---|---|",
    ]
    for label, bare, with_span, span in rows:
        lines.append(f"| {label} | {bare:.1f} | {with_span:.1f} | {span:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--invocations", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", nargs=2, metavar=("REPLACED", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--wait-child", nargs=2, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]))))
        return 0
    if args.wait_child:
        port, calls = (int(v) for v in args.wait_child)
        print(json.dumps(_wait_child(port, os.environ["DATABASE_URL"], calls)))
        return 0
    text = render(measure(args.invocations), args.invocations)
    calls = min(args.invocations, 1000)
    text += "\n\n" + render_waits(measure_waits(calls), calls)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Where an invocation's tracing CPU goes\n\n" + text + "\n")
    print(text + f"\n\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
