"""Cold-start and warm overhead of tracing, against the untraced handler, in one run.

    python -m bench.coldstart [--rounds 20] [--warm 2000] [--out bench/results/coldstart.md]

Cold start is measured end to end: from starting a fresh interpreter until
the first invocation has returned with its spans delivered (the flush is
synchronous, so deferring work into the first invocation gains nothing).
Variants run interleaved in a shuffled order each round, so that machine noise
hits them alike, and the added cost is the median of the per-round differences
against the untraced handler.  Warm latency is measured inside the process
around each handler call, over several processes per variant.  Spans are
counted at the local collector: delivered versus expected.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import driver
from dsqltrace.report.figures import percentile

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"


@dataclass
class Variant:
    """One way of running the handler: module, interpreter, environment, spans it should emit."""

    name: str
    module: str
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    spans_cold: int = 0
    spans_warm: int = 0
    cold_ms: list[float] = field(default_factory=list)
    init_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    warm_ns: list[int] = field(default_factory=list)
    cpu_ns: int = 0
    expected_spans: int = 0

    @property
    def service(self) -> str:
        return "bench-" + "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


def bench_database() -> Any:
    """The benchmarks' PostgreSQL (embedded, in .bench/pg), with the table they insert into."""
    from dsqltrace.pg import EmbeddedPostgres

    WORK.mkdir(exist_ok=True)
    pg = EmbeddedPostgres(WORK / "pg")
    pg.start()
    pg.psql("CREATE TABLE IF NOT EXISTS bench_todos (id uuid PRIMARY KEY, name text NOT NULL)")
    return pg


def start_collector(spans_file: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """A fresh local collector writing to ``spans_file`` (``args``: more options, such as
    ``--fault slow --delay-ms 20``); returns it and its port."""
    from dsqltrace.collector import spawn

    spans_file.unlink(missing_ok=True)
    return spawn(spans_file, *args)


def base_env(database_url: str, collector_url: str) -> dict[str, str]:
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DATABASE_URL": database_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
            "AWS_LAMBDA_FUNCTION_NAME": "bench",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_REGION": "us-east-1",
        }
    )
    return env


def run_cold(variant: Variant, env: dict[str, str]) -> None:
    full = {**env, **variant.env, "OTEL_SERVICE_NAME": variant.service}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [variant.python, "-m", "bench.driver", variant.module, "0"],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = ""
    for line in proc.stdout:  # the first result line: the first invocation has returned
        if line.startswith(driver.PREFIX):
            break
    elapsed = (time.perf_counter() - start) * 1000
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or not line.startswith(driver.PREFIX):
        raise RuntimeError(f"{variant.name} failed: {err[-2000:]}")
    data = driver.parse(line)[0]
    variant.cold_ms.append(elapsed)
    variant.init_ms.append(data["init_ns"] / 1e6)
    variant.first_ms.append(data["first_ns"] / 1e6)
    variant.expected_spans += variant.spans_cold


def run_warm(variant: Variant, env: dict[str, str], count: int) -> None:
    full = {**env, **variant.env, "OTEL_SERVICE_NAME": variant.service}
    result = subprocess.run(
        [variant.python, "-m", "bench.driver", variant.module, str(count)],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{variant.name} failed: {result.stderr[-2000:]}")
    warm = driver.parse(result.stdout)[-1]
    variant.warm_ns.extend(warm["latencies_ns"])
    variant.cpu_ns += warm["cpu_ns"]
    variant.expected_spans += variant.spans_cold + count * variant.spans_warm


def count_delivered(spans_file: Path) -> dict[str, int]:
    """Spans the collector stored, per service."""
    from dsqltrace.report.runs import read_spans

    counts: dict[str, int] = {}
    for span in read_spans(spans_file):
        counts[span.service] = counts.get(span.service, 0) + 1
    return counts


def paired_added(variant: Variant, baseline: Variant) -> float:
    return statistics.median(a - b for a, b in zip(variant.cold_ms, baseline.cold_ms, strict=True))


def table(variants: list[Variant], delivered: dict[str, int], rounds: int, warm: int) -> str:
    base = variants[0]
    base_p50 = percentile([x / 1e6 for x in base.warm_ns], 50)
    base_p99 = percentile([x / 1e6 for x in base.warm_ns], 99)
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}; "
        f"{rounds} paired cold rounds, {warm} warm invocations per variant.",
        "",
        "| variant | cold start, median (ms) | cold added, paired median (ms) | ratio | "
        "import + init (ms) | first invocation (ms) | warm p50 (ms) | warm p99 (ms) | "
        "warm added p50 / p99 (ms) | CPU per invocation (µs) | spans delivered |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        warm_ms = [x / 1e6 for x in v.warm_ns]
        p50, p99 = percentile(warm_ms, 50), percentile(warm_ms, 99)
        added = paired_added(v, base) if v is not base else 0.0
        ratio = statistics.median(v.cold_ms) / statistics.median(base.cold_ms)
        got = delivered.get(v.service, 0)
        spans = (
            f"{got}/{v.expected_spans} ({100 * got / v.expected_spans:.1f} %)"
            if v.expected_spans
            else "–"
        )
        lines.append(
            f"| {v.name} | {statistics.median(v.cold_ms):.1f} | {added:+.1f} | {ratio:.2f}× | "
            f"{statistics.median(v.init_ms):.1f} | {statistics.median(v.first_ms):.2f} | "
            f"{p50:.3f} | {p99:.3f} | {p50 - base_p50:+.3f} / {p99 - base_p99:+.3f} | "
            f"{v.cpu_ns / max(1, len(v.warm_ns)) / 1000:.0f} | {spans} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="paired cold-start rounds")
    parser.add_argument("--warm", type=int, default=2000, help="warm invocations per variant")
    parser.add_argument("--processes", type=int, default=4, help="processes the warm runs use")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/coldstart.md")
    args = parser.parse_args(argv)

    pg = bench_database()
    spans_file = WORK / "spans.jsonl"
    collector, port = start_collector(spans_file)
    from dsqltrace.pg import free_port

    lean_port = free_port()
    lean = subprocess.Popen(
        [sys.executable, "-m", "bench.receiver", str(lean_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert lean.stdout is not None
    lean.stdout.readline()
    try:
        env = base_env(pg.url(), f"http://127.0.0.1:{port}")
        variants = [
            Variant("untraced", "bench.apps.untraced"),
            Variant("dsql-lambda-tracing, OTLP", "bench.apps.traced", spans_cold=5, spans_warm=3),
            # The same, to a receiver that answers at once (as the Datadog extension does);
            # its "spans delivered" counts requests, one per invocation.
            Variant(
                "dsql-lambda-tracing, OTLP to a minimal receiver",
                "bench.apps.traced",
                env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{lean_port}"},
                spans_cold=1,
                spans_warm=1,
            ),
            # The same spans, not delivered: what span creation alone costs.
            Variant(
                "dsql-lambda-tracing, spans only (exporter none)",
                "bench.apps.traced",
                env={"OTEL_TRACES_EXPORTER": "none"},
            ),
        ]
        for variant in variants:  # warm up the file cache; not counted
            run_cold(variant, env)
            variant.cold_ms.clear(), variant.init_ms.clear(), variant.first_ms.clear()
        for r in range(args.rounds):
            order = variants[:]
            random.shuffle(order)
            for variant in order:
                run_cold(variant, env)
            print(f"cold round {r + 1}/{args.rounds}", file=sys.stderr, end="\r")
        per_process = max(1, args.warm // args.processes)
        for _ in range(args.processes):
            order = variants[:]
            random.shuffle(order)
            for variant in order:
                run_warm(variant, env, per_process)
        time.sleep(0.5)
    finally:
        collector.terminate()
        collector.wait(10)
        lean.terminate()
        lean_out, _ = lean.communicate(timeout=10)
        pg.stop()
    delivered = count_delivered(spans_file)
    lean_requests = int(lean_out.split()[1]) if lean_out.startswith("requests") else 0
    delivered[variants[2].service] = lean_requests  # the minimal receiver's variant
    text = table(variants, delivered, args.rounds, per_process * args.processes)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Cold start and warm overhead\n\nCommand: `make bench` "
        "(`python -m bench.coldstart`).\n\n" + text + "\n"
    )
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
