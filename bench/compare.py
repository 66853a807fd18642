"""This toolkit against what users would pick instead: cold start, warm latency, delivery, load.

    python -m bench.compare [--rounds 20] [--warm 2000] [--load-seconds 15]   # or: make compare

Each variant runs the same small Todo handler (one INSERT into the same local
PostgreSQL) in a virtualenv of its own, built here with pinned versions and
holding only what that variant needs (plus boto3, which Lambda's runtime has):

1. untraced; 2. this toolkit, OTLP exporter; 3. this toolkit, Datadog exporter;
4. stock OpenTelemetry (SDK, OTLP/HTTP, BatchSpanProcessor, psycopg
instrumentation, force_flush per invocation); 5. AwsLambdaInstrumentor;
6. ddtrace + datadog-lambda's wrapper (to Datadog's test agent, as the
extension); 7. Powertools Tracer (X-Ray SDK, UDP to a loopback daemon address).

Cold starts are paired rounds, interleaved in a shuffled order; warm latency
is measured around the handler call, with each library's own end-of-invocation
flush.  Also: the DSQL token path with and without boto3, and the Todo API
under 30 and 100 virtual users in the emulator, traced versus untraced.
Writes ``bench/results/compare.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.coldstart import (
    ROOT,
    WORK,
    Variant,
    base_env,
    bench_database,
    percentile,
    run_cold,
    run_warm,
    start_collector,
)

PSYCOPG = "psycopg[binary]==3.3.9"
BOTO3 = "boto3==1.43.11"
OTEL_API = "opentelemetry-api==1.45.1"
OTEL_SDK = "opentelemetry-sdk==1.45.1"
OTLP_HTTP = "opentelemetry-exporter-otlp-proto-http==1.45.1"
INSTR_PSYCOPG = "opentelemetry-instrumentation-psycopg==0.66b1"
INSTR_LAMBDA = "opentelemetry-instrumentation-aws-lambda==0.66b1"
DDTRACE = "ddtrace==4.16.0"
DATADOG_LAMBDA = "datadog-lambda==8.130.0"
POWERTOOLS = "aws-lambda-powertools[tracer]==3.37.0"


@dataclass
class Spec:
    name: str
    module: str
    packages: tuple[str, ...]
    receiver: str | None  # otlp, agent, xray
    env: dict[str, str] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.name.lower()).strip("-")


SPECS = [
    Spec("untraced", "bench.apps.untraced", (PSYCOPG, BOTO3), None),
    Spec(
        "dsql-lambda-tracing, OTLP",
        "bench.apps.traced",
        (PSYCOPG, BOTO3, OTEL_API, OTEL_SDK),
        "otlp",
    ),
    Spec(
        "dsql-lambda-tracing, Datadog exporter",
        "bench.apps.traced",
        (PSYCOPG, BOTO3, OTEL_API, OTEL_SDK, DDTRACE),
        "agent",
        {"OTEL_TRACES_EXPORTER": "datadog"},
    ),
    Spec(
        "stock OpenTelemetry (Batch + force_flush)",
        "bench.apps.stock_otel",
        (PSYCOPG, BOTO3, OTEL_SDK, OTLP_HTTP, INSTR_PSYCOPG),
        "otlp",
    ),
    Spec(
        "AwsLambdaInstrumentor",
        "bench.apps.otel_lambda",
        (PSYCOPG, BOTO3, OTEL_SDK, OTLP_HTTP, INSTR_PSYCOPG, INSTR_LAMBDA),
        "otlp",
        {"_HANDLER": "bench.apps.otel_lambda.handler"},
    ),
    Spec(
        "ddtrace + datadog-lambda",
        "bench.apps.datadog_lambda_app",
        (PSYCOPG, BOTO3, DDTRACE, DATADOG_LAMBDA),
        "agent",
        {"DD_FLUSH_TO_LOG": "false", "DD_TRACE_ENABLED": "true", "DD_MERGE_XRAY_TRACES": "false"},
    ),
    Spec(
        "Powertools Tracer (X-Ray, no delivery wait)",
        "bench.apps.powertools_app",
        (PSYCOPG, BOTO3, POWERTOOLS),
        "xray",
    ),
]


def venv_for(spec: Spec) -> str:
    """Build (once) the variant's virtualenv; returns its python."""
    folder = WORK / "venvs" / spec.slug
    python = folder / "bin" / "python"
    stamp = folder / ".requirements"
    wanted = hashlib.sha256(" ".join(spec.packages).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    print(f"building the virtualenv of {spec.name} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *spec.packages],
        check=True,
    )
    stamp.write_text(wanted)
    return str(python)


class XrayDaemon:
    """A loopback UDP address that counts the handler subsegments the X-Ray SDK sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.roots: dict[str, int] = {}
        self.documents = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            data = self.sock.recv(65536)
            self.documents += 1
            try:
                document = json.loads(data.split(b"\n", 1)[1])
            except (IndexError, ValueError):
                continue
            if document.get("name", "").startswith("## handler"):
                service = (document.get("annotations") or {}).get("Service", "?")
                self.roots[service] = self.roots.get(service, 0) + 1


class AgentRoots:
    """Root spans received by the test agent, counted and cleared after each process.

    The agent re-reads every stored request on each new one: kept small, it stays fast.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.roots: dict[str, int] = {}

    def collect(self) -> None:
        with urllib.request.urlopen(self.url + "/test/session/traces", timeout=120) as response:  # noqa: S310
            traces = json.loads(response.read())
        for trace in traces:
            for span in trace:
                if span.get("name") == "aws.lambda" and span.get("parent_id") in (0, None):
                    self.roots[span["service"]] = self.roots.get(span["service"], 0) + 1
        with urllib.request.urlopen(self.url + "/test/session/clear", timeout=30):  # noqa: S310
            pass


def otlp_roots(spans_file: Path) -> dict[str, int]:
    from dsqltrace.report.runs import read_spans

    roots: dict[str, int] = {}
    for span in read_spans(spans_file):
        if span.kind == 2 and not span.parent_id:  # SERVER, a trace's root
            roots[span.service] = roots.get(span.service, 0) + 1
    return roots


def token_paths(rounds: int, python: str) -> dict[str, float]:
    """Fresh process, toolkit imported: the first token (imports included) and the next one."""
    code = (
        "import tracing, time\n"  # a function has imported the toolkit already
        "t = time.perf_counter()\n"
        "from handlers.token import TokenGenerator\n"
        "TokenGenerator('abc.dsql.us-east-1.on.aws', 'us-east-1').generate()\n"
        "t1 = time.perf_counter()\n"
        "TokenGenerator('abc.dsql.us-east-1.on.aws', 'us-east-1').generate()\n"
        "print((t1 - t) * 1000, (time.perf_counter() - t1) * 1000)"
    )
    creds = Path(tempfile.mkdtemp()) / "credentials"
    creds.write_text(
        "[default]\naws_access_key_id = AKIABENCH00000000000\naws_secret_access_key = s\n"
    )
    base = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    cases = {
        "environment credentials": {
            **base,
            "AWS_ACCESS_KEY_ID": "AKIABENCH00000000000",
            "AWS_SECRET_ACCESS_KEY": "s",
        },
        "boto3 credential chain": {**base, "AWS_SHARED_CREDENTIALS_FILE": str(creds)},
    }
    results: dict[str, float] = {}
    for label, env in cases.items():
        cold, warm = [], []
        for _ in range(rounds):
            out = subprocess.run(
                [python, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            cold.append(float(out[0]))
            warm.append(float(out[1]))
        results[f"{label}: first token (ms)"] = statistics.median(cold)
        results[f"{label}: next token (ms)"] = statistics.median(warm)
    return results


def under_load(users_list: list[int], seconds: float, rounds: int) -> list[dict]:
    """The Todo API in the emulator (``dsqltrace serve``, its own process), traced and untraced.

    Each round runs both, in alternating order, on a fresh stack: a 5 s warm-up,
    then ``seconds`` measured, with the CPU each part of the stack used.
    """
    rows = []
    for users in users_list:
        for r in range(rounds):
            for traced in (False, True) if r % 2 == 0 else (True, False):
                row = load_run(users, traced, seconds)
                row["round"] = r
                rows.append(row)
                print(
                    f"load: {users} users, round {r + 1}/{rounds}, traced={traced}: "
                    f"{row['rps']:.0f} req/s",
                    file=sys.stderr,
                )
    return rows


def load_run(
    users: int, traced: bool, seconds: float, *, extra_env: dict[str, str] | None = None
) -> dict:
    """One load run of the Todo API in `dsqltrace serve` (256 MB, CPU-limited as in Lambda)."""
    from bench import cpu
    from dsqltrace.demo import _stop, start_services
    from dsqltrace.load import LoadResult, parse_mix, run_load
    from dsqltrace.report.runs import INVOCATIONS_FILE, read_records
    from dsqltrace.serve import local_database

    mix = parse_mix("post=1,get=1")
    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-load-"))
    folder.chmod(0o755)
    server, db_env = local_database(folder / "pg")
    env = {
        **os.environ,
        **db_env,
        "AWS_ACCESS_KEY_ID": "AKIALOAD000000000000",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    processes: list[subprocess.Popen[str]] = []
    out = folder / "client.jsonl"
    try:
        url = start_services(
            processes,
            folder,
            env,
            traced=traced,
            max_environments=users + 8,
            extra_env=extra_env,
        )

        def load(duration_s: float, record_to: Path | None) -> LoadResult:
            return asyncio.run(
                run_load(
                    url,
                    url,
                    users=users,
                    duration_s=duration_s,
                    requests=None,
                    mix=mix,
                    out=record_to,
                    progress=False,
                )
            )

        load(min(5.0, seconds), None)  # warm-up
        before = cpu.snapshot()
        result = load(seconds, out)
        used = cpu.per_request(before, cpu.snapshot(), result.requests)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        # Each warm invocation's CPU in its environment's cgroup (all threads, up to the
        # last `next`), from the emulator's REPORT records.
        invocation_cpu = [
            r["cpu_ms"]
            for r in read_records(folder / INVOCATIONS_FILE)
            if r.get("record") == "invocation" and not r.get("cold") and "cpu_ms" in r
        ]
    finally:
        for process in reversed(processes):
            _stop(process)
        server.stop()
    by_op: dict[str, list[float]] = {}
    for record in records:
        by_op.setdefault(record["op"], []).append(record["latency_ms"])
    return {
        "users": users,
        "traced": traced,
        "rps": result.requests / result.elapsed_s,
        "errors": result.server_errors,
        "insert_p95": percentile(by_op.get("post", [0.0]), 95),
        "select_p95": percentile(by_op.get("get", [0.0]), 95),
        "cpu_us": used,
        "invocation_cpu_ms": statistics.median(invocation_cpu) if invocation_cpu else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--load-seconds", type=float, default=15.0)
    parser.add_argument("--load-users", default="30,100")
    parser.add_argument("--load-rounds", type=int, default=5)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/compare.md")
    args = parser.parse_args(argv)

    from tests.agent import TestAgent

    pythons = {spec.slug: venv_for(spec) for spec in SPECS}
    pg = bench_database()
    spans_file = WORK / "compare-spans.jsonl"
    collector, port = start_collector(spans_file)
    agent = TestAgent()
    xray = XrayDaemon()
    variants: list[Variant] = []
    try:
        env = base_env(pg.url(), f"http://127.0.0.1:{port}")
        env.update(
            {
                "DD_TRACE_AGENT_URL": agent.trace_url,
                "LAMBDA_TASK_ROOT": str(ROOT),
                "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{xray.port}",
                "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
            }
        )
        for spec in SPECS:
            variant = Variant(
                spec.name,
                spec.module,
                python=pythons[spec.slug],
                env={
                    **spec.env,
                    "DD_SERVICE": f"bench-{spec.slug}",
                    "POWERTOOLS_SERVICE_NAME": f"bench-{spec.slug}",
                },
                spans_cold=1 if spec.receiver else 0,
                spans_warm=1 if spec.receiver else 0,
            )
            variant.receiver = spec.receiver  # type: ignore[attr-defined]
            variants.append(variant)
        for variant in variants:  # warm the file cache, not counted
            run_cold(variant, env)
            variant.cold_ms.clear(), variant.init_ms.clear(), variant.first_ms.clear()
        agent.clear()
        counted = AgentRoots(agent.trace_url)
        spans_file.write_text("")
        xray.roots.clear()
        for variant in variants:
            variant.expected_spans = 0
        for r in range(args.rounds):
            order = variants[:]
            random.shuffle(order)
            for variant in order:
                run_cold(variant, env)
                if variant.receiver == "agent":  # type: ignore[attr-defined]
                    counted.collect()
            print(f"cold round {r + 1}/{args.rounds}", file=sys.stderr)
        processes = max(1, args.warm // 100)
        for _ in range(processes):
            order = variants[:]
            random.shuffle(order)
            for variant in order:
                run_warm(variant, env, args.warm // processes)
                if variant.receiver == "agent":  # type: ignore[attr-defined]
                    counted.collect()
        time.sleep(2)
        delivered = {**otlp_roots(spans_file), **counted.roots}
        delivered.update(xray.roots)
        tokens = token_paths(10, pythons[SPECS[1].slug])
    finally:
        collector.terminate()
        collector.wait(10)
        agent.stop()
        pg.stop()
    load_rows = (
        []
        if args.skip_load
        else under_load(
            [int(u) for u in args.load_users.split(",")], args.load_seconds, args.load_rounds
        )
    )
    text = render(variants, delivered, tokens, load_rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Compared with the alternatives\n\nCommand: `make compare` "
        "(`python -m bench.compare`).\n\n" + text + "\n"
    )
    print("\n" + text + f"\n\nwritten to {args.out}")
    return 0


def render(
    variants: list[Variant],
    delivered: dict[str, int],
    tokens: dict[str, float],
    load_rows: list[dict],
    args: argparse.Namespace,
) -> str:
    base = variants[0]
    base_warm = [x / 1e6 for x in base.warm_ns]
    b50, b99 = percentile(base_warm, 50), percentile(base_warm, 99)
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.rounds} paired cold rounds, "
        f"{len(base.warm_ns)} warm invocations per variant; each variant in its own virtualenv.",
        "",
        "| variant | cold start (ms) | cold added (ms) | × untraced | import + init (ms) | "
        "first invocation (ms) | warm p50 / p99 (ms) | warm added p50 / p99 (ms) | "
        "CPU / invocation (µs) | root spans delivered |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    added = {}
    for v in variants:
        warm = [x / 1e6 for x in v.warm_ns]
        p50, p99 = percentile(warm, 50), percentile(warm, 99)
        cold_added = statistics.median(a - b for a, b in zip(v.cold_ms, base.cold_ms, strict=True))
        added[v.name] = cold_added
        got = delivered.get(v.service, 0)
        spans = (
            "–"
            if not v.expected_spans
            else f"{got}/{v.expected_spans} ({100 * got / v.expected_spans:.0f} %)"
        )
        lines.append(
            f"| {v.name} | {statistics.median(v.cold_ms):.1f} | {cold_added:+.1f} | "
            f"{statistics.median(v.cold_ms) / statistics.median(base.cold_ms):.2f} | "
            f"{statistics.median(v.init_ms):.1f} | {statistics.median(v.first_ms):.2f} | "
            f"{p50:.3f} / {p99:.3f} | {p50 - b50:+.3f} / {p99 - b99:+.3f} | "
            f"{v.cpu_ns / max(1, len(v.warm_ns)) / 1000:.0f} | {spans} |"
        )
    ours = added[variants[1].name]
    others = [
        a
        for name, a in added.items()
        if name not in (variants[0].name, variants[1].name, variants[2].name)
    ]
    if others:
        lines.append("")
        lines.append(
            f"This toolkit's OTLP cold-start cost is {ours:.1f} ms, "
            f"{ours / min(others):.2f} of the best alternative's ({min(others):.1f} ms)."
        )
    lines += ["", "| DSQL auth token, fresh process | median (ms) |", "|---|---|"]
    lines += [f"| {label} | {value:.2f} |" for label, value in tokens.items()]
    if load_rows:
        lines += ["", *render_load(load_rows)]
    return "\n".join(lines)


def render_load(rows: list[dict]) -> list[str]:
    """Load figures: medians over rounds, and where the CPU of a request goes."""
    from bench.cpu import ROLES

    rounds = 1 + max(row["round"] for row in rows)
    lines = [
        f"The Todo API in the emulator, POST and GET alternating, {rounds} rounds "
        "per row (traced and untraced in alternating order, each on a fresh stack); medians. "
        "Everything shares the machine's cores, so CPU per request is what sets throughput.",
        "",
        "| virtual users | tracing | requests/s | insert p95 (ms) | select p95 (ms) | 5xx | "
        + " | ".join(f"{role} CPU (µs/req)" for role in ROLES)
        + " | total CPU (µs/req) |",
        "|---" * (7 + len(ROLES)) + "|",
    ]
    summary = []
    for users in sorted({row["users"] for row in rows}):
        medians = {}
        for traced in (False, True):
            runs = [row for row in rows if row["users"] == users and row["traced"] == traced]
            cpu = {role: statistics.median(run["cpu_us"][role] for run in runs) for role in ROLES}
            medians[traced] = (statistics.median(run["rps"] for run in runs), cpu)
            lines.append(
                f"| {users} | {'on' if traced else 'off'} | {medians[traced][0]:.0f} | "
                f"{statistics.median(run['insert_p95'] for run in runs):.1f} | "
                f"{statistics.median(run['select_p95'] for run in runs):.1f} | "
                f"{sum(run['errors'] for run in runs)} | "
                + " | ".join(f"{cpu[role]:.0f}" for role in ROLES)
                + f" | {sum(cpu.values()):.0f} |"
            )
        rps = {(row["round"], row["traced"]): row["rps"] for row in rows if row["users"] == users}
        paired = [rps[(r, True)] / rps[(r, False)] for r in range(rounds)]
        (off_rps, off_cpu), (on_rps, on_cpu) = medians[False], medians[True]
        added = {role: on_cpu[role] - off_cpu[role] for role in ROLES}
        served = sum(off_cpu[role] for role in ("function", "emulator", "PostgreSQL"))
        summary.append(
            f"At {users} users tracing costs {100 * (1 - on_rps / off_rps):.1f} % of throughput "
            f"(median of per-round ratios: {100 * (1 - statistics.median(paired)):.1f} %, "
            f"rounds {', '.join(f'{100 * (1 - x):.0f}' for x in paired)} %); it adds "
            f"{sum(added.values()):.0f} µs of CPU per request "
            f"({100 * sum(added.values()) / sum(off_cpu.values()):.0f} % of the untraced "
            f"{sum(off_cpu.values()):.0f} µs): {added['function']:.0f} in the functions, "
            f"{added['collector']:.0f} in the collector, against {served:.0f} µs that the "
            "untraced functions, emulator and PostgreSQL use."
        )
    return [*lines, "", *summary]


if __name__ == "__main__":
    sys.exit(main())
