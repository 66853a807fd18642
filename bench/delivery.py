"""What delivery costs the caller and the bill, per mode, through the emulator, in one run.

    python -m bench.delivery [--warm 200] [--rounds 3] [--cold-rounds 15] [--gap-ms 22]
                             [--load-seconds 20] [--out bench/results/delivery.md]
                             # or: make delivery

The same handler (``bench/apps/emulated.py``: three spans around 2 ms of
waiting) runs in the emulator as four functions: untraced
(``OTEL_SDK_DISABLED=true``), traced with ``after-response`` delivery, traced
``inline``, traced with the ``stdout-otlp`` exporter (one log line per
invocation, forwarded by the emulator's log subscription, as CloudWatch Logs
would), and traced as Lambda Managed Instances (``background``: two
invocations per environment, delivery from a thread; not CPU-limited, since
Managed Instances run on the instance's vCPUs, and with no CPU figure per
invocation, since its workers share one environment).  Each is run at 1,769
MB (one full vCPU) and at 256 MB (a seventh of one: CPU-limited per
environment, as in Lambda), against a
receiver that answers at once (as the Datadog extension does) and one that
takes 20 ms.  Warm requests alternate between the functions in rounds, each
at least ``--gap-ms`` after the previous response (as long as the slow
receiver takes, whichever receiver is used: every request follows the same
idle time); every figure is a median, or a percentile, of the caller's own
timings or of the emulator's REPORT records, and "added" is traced minus
untraced in the same run:

- caller-visible latency (the client's timing of the Function URL);
- cold start: the first response of a new environment, paired median;
- billed duration (handoff to the last ``next``) and CPU per invocation
  (the environment's cgroup, all threads);
- spans delivered, and late (received after the environment froze).

Then the CPU each mode adds in a tight loop in-process (``bench.driver``),
and the seed's load (30 virtual users) on the Todo API at 256 MB: untraced,
traced with ``after-response`` and with ``periodic,1000``, with the CPU each
part of the local stack uses per request.  All figures are emulated: Lambda's
own numbers need an AWS account.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dsqltrace.report.figures import percentile

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "delivery.md"
VARIANTS = {
    "untraced": {"OTEL_SDK_DISABLED": "true"},
    "after-response": {"DSQLTRACE_DELIVERY": "after-response"},
    "inline": {"DSQLTRACE_DELIVERY": "inline"},
    # Log-based: one line per invocation, forwarded by the emulator's log subscription.
    "stdout-otlp": {"OTEL_TRACES_EXPORTER": "stdout-otlp", "DSQLTRACE_DELIVERY": "inline"},
    # Lambda Managed Instances: 2 workers in one environment, delivery from a thread.
    "background": {},
}
#: Variants run as Managed Instances, with this many invocations per environment (they
#: are not CPU-limited: Managed Instances run on the instance's own vCPUs).
CONCURRENCY = {"background": 2}
RECEIVERS = {"at once": 0, "20 ms": 20}
#: The least time from one warm response to the next request, by default: the slowest
#: receiver's delay and 2 ms, so that every request follows the same idle time.
GAP_MS = max(RECEIVERS.values()) + 2
MEMORY = (1769, 256)
#: Where the functions and the receiver run (their own CPU, as in Lambda, where the
#: front end never shares the function's CPU and an extension such as Datadog's
#: does), and the CPUs left to the emulator and the caller; None: not pinned.
PINNED: dict[str, frozenset[int] | None] = {"functions": None, "front": None}


def pin(enabled: bool) -> None:
    """Give the functions and the receiver the last CPU, the caller and the emulator
    the others (two or more CPUs; else nothing is pinned)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not enabled or len(cpus) < 2:
        PINNED.update(functions=None, front=None)
        return
    PINNED.update(functions=frozenset(cpus[-1:]), front=frozenset(cpus[:-1]))
    os.sched_setaffinity(0, PINNED["front"])


def _pinned_to_functions() -> None:
    if PINNED["functions"]:
        os.sched_setaffinity(0, PINNED["functions"])


def _receiver(delay_ms: int) -> tuple[subprocess.Popen[str], int]:
    from dsqltrace.pg import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.receiver", str(port), str(delay_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pinned_to_functions,
    )
    assert process.stdout is not None and "listening" in process.stdout.readline()
    return process, port


async def _emulated(
    memory_mb: int, endpoint: str, records: Path, scenario: Any, **extra: Any
) -> Any:
    import httpx

    from dsqltrace.emulator.function import FunctionConfig
    from dsqltrace.emulator.server import Emulator, Route

    functions = [
        FunctionConfig(
            name,
            "bench.apps.emulated.handler",
            memory_mb=memory_mb,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_SERVICE_NAME": f"bench-{name}",
                **env,
                **extra.get("env", {}),
            },
            idle_timeout_s=extra.get("idle_timeout_s"),
            max_concurrency=CONCURRENCY.get(name),
            cpus=PINNED["functions"],
        )
        for name, env in VARIANTS.items()
    ]
    routes = [Route(frozenset(), f"/{name}", name) for name in VARIANTS]
    emulator = Emulator(functions, routes, task_root=ROOT, records=records, log=io.StringIO())
    port = await emulator.start()
    try:
        if extra.get("caller_process"):
            caller = Caller()
            try:
                return await scenario(f"http://127.0.0.1:{port}", caller, emulator)
            finally:
                await caller.close()
        async with httpx.AsyncClient(timeout=60) as client:
            return await scenario(f"http://127.0.0.1:{port}", client, emulator)
    finally:
        await emulator.stop()


async def _settled(function: Any, limit_s: float = 5.0) -> None:
    """Wait until none of ``function``'s environments is busy (each has called `next`)."""
    deadline = time.monotonic() + limit_s
    while any(e.state == "busy" for e in function.environments):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.0005)


class Caller:
    """The caller's process (:mod:`bench.caller`): times each request on its side."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    async def post(self, url: str) -> float:
        """POST to ``url``; the caller's latency in ms (the answer must be 201)."""
        if self._process is None:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.caller",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(url.encode() + b"\n")
        status, elapsed = (await self._process.stdout.readline()).split()
        assert status == b"201", f"{url} answered {status.decode()}"
        return float(elapsed)

    async def close(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()
            await self._process.wait()


async def _timed(client: Any, url: str) -> float:
    if isinstance(client, Caller):
        return await client.post(url)
    started = time.perf_counter()
    response = await client.post(url, content=b'{"name": "bench"}')
    assert response.status_code == 201, response.text
    return (time.perf_counter() - started) * 1000


def warm_and_cold(
    memory_mb: int, delay_ms: int, warm: int, rounds: int, cold_rounds: int, gap_ms: float
) -> dict:
    """Caller latency (warm, cold) and REPORT records for each variant's function."""
    receiver, port = _receiver(delay_ms)
    records = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    caller: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cold: dict[str, list[float]] = {v: [] for v in VARIANTS}

    extra_cold: dict[str, int] = {}

    async def scenario(url: str, client: Any, emulator: Any) -> None:
        for name in VARIANTS:  # the first cold starts, not measured here
            await _timed(client, f"{url}/{name}/todos")
            await _settled(emulator.functions[name])
        created = {name: emulator.functions[name].created for name in VARIANTS}
        # Warm means a frozen environment waits for the request: each request is sent
        # once the previous one's environment is idle again (its extension called
        # `next`), and the functions take turns request by request.  Every request
        # also comes at least `gap_ms` after the previous response, with either
        # receiver: else only the requests after a slow after-response delivery would
        # follow a long idle time (docs/delivery.md, "Warm").
        gap_s = gap_ms / 1000
        for r in range(rounds):
            for i in range(warm):
                order = list(VARIANTS) if (r + i) % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    caller[name].append(await _timed(client, f"{url}/{name}/todos"))
                    answered = time.perf_counter()
                    await _settled(emulator.functions[name])
                    pause = gap_s - (time.perf_counter() - answered)
                    if pause > 0:
                        await asyncio.sleep(pause)
        for name in VARIANTS:
            extra_cold[name] = emulator.functions[name].created - created[name]
        for r in range(cold_rounds):
            for name in list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS)):
                function = emulator.functions[name]
                await asyncio.gather(*(env.stop() for env in list(function.environments)))
                cold[name].append(await _timed(client, f"{url}/{name}/todos"))
                await _settled(function)

    try:
        asyncio.run(
            _emulated(memory_mb, f"http://127.0.0.1:{port}", records, scenario, caller_process=True)
        )
    finally:
        receiver.terminate()
        receiver.wait(10)
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    records.unlink()
    reports = [r for r in rows if r.get("record") == "invocation" and "billed_ms" in r]
    result: dict[str, Any] = {"memory_mb": memory_mb, "receiver_ms": delay_ms, "variants": {}}
    for name in VARIANTS:
        mine = [r for r in reports if r["function"] == name and not r["cold"]]
        # At Lambda's front end: the request's arrival to the runtime's posted response.
        front = [(r["end_ns"] - r["start_ns"]) / 1e6 for r in mine]
        result["variants"][name] = {
            "caller_p50": percentile(caller[name], 50),
            "caller_p99": percentile(caller[name], 99),
            "cold_ms": cold[name],
            "billed_p50": percentile([r["duration_ms"] for r in mine], 50),
            "billed_p99": percentile([r["duration_ms"] for r in mine], 99),
            "cpu_ms": statistics.median(cpu)
            if (cpu := [r["cpu_ms"] for r in mine if "cpu_ms" in r])
            else None,
            "post_runtime_p50": percentile([r.get("post_runtime_ms", 0.0) for r in mine], 50),
            "warm_cold_starts": extra_cold.get(name, 0),
            "front_p50": percentile(front, 50),
            "front_p99": percentile(front, 99),
        }
    return result


def delivered(delay_ms: int) -> dict:
    """Spans delivered across freezes, idle retirement (SIGTERM) and stop; late ones."""
    from bench.coldstart import start_collector
    from dsqltrace.report.runs import read_spans

    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-delivered-"))
    spans_file, records = folder / "spans.jsonl", folder / "records.jsonl"
    collector_args = ["--fault", "slow", "--delay-ms", str(delay_ms)] if delay_ms else []
    collector, port = start_collector(spans_file, *collector_args)
    sent = {"after-response": 0, "periodic (retired)": 0}

    async def scenario(url: str, client: Any, emulator: Any) -> None:
        for _ in range(60):  # frozen between each, delivered after each response
            await _timed(client, f"{url}/after-response/todos")
            sent["after-response"] += 1
        for _ in range(20):  # kept in memory, delivered at SIGTERM when retired
            await _timed(client, f"{url}/inline/todos")
            sent["periodic (retired)"] += 1
        function = emulator.functions["inline"]
        deadline = time.monotonic() + 15
        while function.environments and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    try:
        VARIANTS["inline"] = {"DSQLTRACE_DELIVERY": "periodic,600000"}
        asyncio.run(
            _emulated(1769, f"http://127.0.0.1:{port}", records, scenario, idle_timeout_s=2.0)
        )
    finally:
        VARIANTS["inline"] = {"DSQLTRACE_DELIVERY": "inline"}
        time.sleep(1.0)  # the collector stores once idle for 0.2 s
        collector.terminate()
        collector.wait(10)
    spans = read_spans(spans_file)
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    done = {r["request_id"]: r.get("done_ns") for r in rows if r.get("record") == "invocation"}
    roots = [s for s in spans if s.is_root]
    by_service = {
        "after-response": [s for s in roots if s.service == "bench-after-response"],
        "periodic (retired)": [s for s in roots if s.service == "bench-inline"],
    }
    late = [
        s
        for s in by_service["after-response"]
        if (d := done.get(str(s.attributes.get("faas.invocation_id")))) and s.received_ns > d
    ]
    return {
        "receiver_ms": delay_ms,
        "sent": sent,
        "roots": {k: len(v) for k, v in by_service.items()},
        "late": len(late),
    }


#: Warm invocations per process in the tight loop.
TIGHT_LOOP = 2000


def cpu_in_process() -> dict[str, float]:
    """CPU per warm invocation in a tight loop of :data:`TIGHT_LOOP` (``bench.driver``), by
    delivery mode."""
    from bench import coldstart, driver

    pg = coldstart.bench_database()
    receiver, port = _receiver(0)
    base = {
        **coldstart.base_env(pg.url(), f"http://127.0.0.1:{port}"),
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
    }
    variants = {
        "untraced": ("bench.apps.untraced", {}),
        "inline": ("bench.apps.traced", {"DSQLTRACE_DELIVERY": "inline"}),
        "periodic,1000": ("bench.apps.traced", {"DSQLTRACE_DELIVERY": "periodic,1000"}),
        "stdout-otlp (inline)": (
            "bench.apps.traced",
            {"OTEL_TRACES_EXPORTER": "stdout-otlp", "DSQLTRACE_DELIVERY": "inline"},
        ),
        "background (Managed Instances)": (
            "bench.apps.traced",
            {"AWS_LAMBDA_MAX_CONCURRENCY": "2"},
        ),
        "spans only (no export)": ("bench.apps.traced", {"OTEL_TRACES_EXPORTER": "none"}),
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(3):
            for name, (module, extra) in variants.items():
                out = subprocess.run(
                    [sys.executable, "-m", "bench.driver", module, str(TIGHT_LOOP)],
                    cwd=ROOT,
                    env={**base, **extra},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                result = next(r for r in driver.parse(out) if r["phase"] == "warm")
                cpu[name].append(result["cpu_ns"] / TIGHT_LOOP / 1000)
    finally:
        receiver.terminate()
        receiver.wait(10)
        pg.stop()
    return {name: statistics.median(values) for name, values in cpu.items()}


#: The load's variants: untraced, the default delivery, and the one for busy functions.
LOAD_MODES: dict[str, dict[str, str] | None] = {
    "off": None,
    "after-response": {"DSQLTRACE_DELIVERY": "after-response"},
    "periodic,1000": {"DSQLTRACE_DELIVERY": "periodic,1000"},
}


def under_load(seconds: float, rounds: int) -> list[dict]:
    """The seed's load (30 virtual users) on the Todo API at 256 MB, CPU-limited: untraced,
    and traced with each of :data:`LOAD_MODES`, in an order that turns each round."""
    from bench.compare import load_run

    rows = []
    names = list(LOAD_MODES)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            extra = LOAD_MODES[name]
            row = load_run(30, extra is not None, seconds, extra_env=extra)
            row["round"] = r
            row["mode"] = name
            rows.append(row)
            print(f"load round {r + 1}/{rounds}, {name}: {row['rps']:.0f} req/s", file=sys.stderr)
    return rows


def _cpu(ms: float | None) -> str:
    return "–" if ms is None else f"{ms * 1000:.0f}"


def _cpu_added(ms: float | None, base: float | None) -> str:
    return "–" if ms is None or base is None else f"{(ms - base) * 1000:+.0f}"


def render(
    runs: list[dict], cpu: dict[str, float], spans: list[dict], load: list[dict], args: Any
) -> str:
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}), `python -m bench.delivery "
        f"--warm {args.warm} --rounds {args.rounds} --cold-rounds {args.cold_rounds}"
        + f" --gap-ms {args.gap_ms:g}"
        + (f" --variants {args.variants}" if args.variants else "")
        + (
            f" --load-seconds {args.load_seconds:g} --load-rounds {args.load_rounds}"
            if load
            else ""
        )
        + "`; "
        "emulated figures (the emulator with the real awslambdaric; 256 MB runs are CPU-limited "
        "per environment). Medians; added = traced minus untraced, same run.",
        "",
        "| memory | receiver | delivery | caller p50 / p99 (ms) | caller added p50 / p99 (ms) "
        "| front end added p50 / p99 (ms) "
        "| cold first response, added (ms) | billed p50 / p99 (ms) | billed added p50 / p99 (ms) "
        "| post-response (ms) | CPU / invocation (µs) | CPU added (µs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        base = run["variants"]["untraced"]
        for name, v in run["variants"].items():
            cold_added = [t - u for t, u in zip(v["cold_ms"], base["cold_ms"], strict=True)]
            lines.append(
                f"| {run['memory_mb']} MB | {run['receiver_ms']} ms | {name} "
                f"| {v['caller_p50']:.2f} / {v['caller_p99']:.2f} "
                f"| {v['caller_p50'] - base['caller_p50']:+.2f} / "
                f"{v['caller_p99'] - base['caller_p99']:+.2f} "
                f"| {v['front_p50'] - base['front_p50']:+.2f} / "
                f"{v['front_p99'] - base['front_p99']:+.2f} "
                f"| {statistics.median(cold_added):+.1f} (n={len(cold_added)}) "
                f"| {v['billed_p50']:.2f} / {v['billed_p99']:.2f} "
                f"| {v['billed_p50'] - base['billed_p50']:+.2f} / "
                f"{v['billed_p99'] - base['billed_p99']:+.2f} "
                f"| {v['post_runtime_p50']:.2f} | {_cpu(v['cpu_ms'])} "
                f"| {_cpu_added(v['cpu_ms'], base['cpu_ms'])} |"
            )
    if cpu:
        lines += [
            "",
            f"CPU per warm invocation in a tight loop, in-process (`bench.driver`, {TIGHT_LOOP} "
            "invocations, median of 3 processes; the handler inserts a row into PostgreSQL):",
            "",
            "| delivery | CPU / invocation (µs) | added (µs) |",
            "|---|---|---|",
        ]
        for name, value in cpu.items():
            lines.append(f"| {name} | {value:.0f} | {value - cpu['untraced']:+.0f} |")
    if spans:
        lines += [
            "",
            "| receiver | spans sent | root spans delivered | late |",
            "|---|---|---|---|",
        ]
        for s in spans:
            for kind, sent in s["sent"].items():
                got = s["roots"][kind]
                late = s["late"] if kind == "after-response" else "–"
                lines.append(
                    f"| {s['receiver_ms']} ms | {kind}: {sent} invocations | {got} "
                    f"({100 * got / max(sent, 1):.0f} %) | {late} |"
                )
    if load:
        lines += [
            "",
            "The seed's load at 256 MB, CPU-limited (30 virtual users, POST and GET alternating, "
            f"{args.load_seconds:.0f} s per round, the variants in turn):",
            "",
            "| tracing | requests/s | insert p95 (ms) | select p95 (ms) | 5xx "
            "| requests/s lost | insert p95 added | select p95 added "
            "| CPU per warm invocation (ms) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        off = [r for r in load if r["mode"] == "off"]
        base = {
            k: statistics.median(r[k] for r in off) for k in ("rps", "insert_p95", "select_p95")
        }
        for name in LOAD_MODES:
            rows = [r for r in load if r["mode"] == name]
            if not rows:
                continue
            got = {k: statistics.median(r[k] for r in rows) for k in base}
            lines.append(
                f"| {name if name == 'off' else 'on, ' + name} | {got['rps']:.0f} "
                f"| {got['insert_p95']:.1f} | {got['select_p95']:.1f} "
                f"| {sum(r['errors'] for r in rows)} "
                f"| {100 * (1 - got['rps'] / base['rps']):.1f} % "
                f"| {100 * (got['insert_p95'] / base['insert_p95'] - 1):+.1f} % "
                f"| {100 * (got['select_p95'] / base['select_p95'] - 1):+.1f} % "
                f"| {_median_of(rows, 'invocation_cpu_ms')} |"
            )
        lines += _load_cpu(load)
    return "\n".join(lines)


def _median_of(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{statistics.median(values):.2f}" if values else "–"


def _load_cpu(load: list[dict]) -> list[str]:
    """CPU per request by part of the stack (medians of the rounds), for each variant:
    the machine's cores are saturated, so this is what sets requests per second."""
    from bench.cpu import ROLES

    modes = [m for m in LOAD_MODES if any(r["mode"] == m for r in load)]
    if not all("cpu_us" in r for r in load) or "off" not in modes:
        return []
    lines = [
        "",
        "CPU per request under that load, by part of the local stack (µs, medians of the "
        "rounds; new environments' init included; added against off):",
        "",
        "| part | " + " | ".join(modes) + " |",
        "|---|" + "---|" * len(modes),
    ]
    per = {
        m: {
            role: statistics.median(r["cpu_us"][role] for r in load if r["mode"] == m)
            for role in ROLES
        }
        for m in modes
    }
    for role in (*ROLES, "all"):
        cells = []
        for m in modes:
            value = sum(per[m].values()) if role == "all" else per[m][role]
            base = sum(per["off"].values()) if role == "all" else per["off"][role]
            cells.append(f"{value:.0f}" if m == "off" else f"{value:.0f} ({value - base:+.0f})")
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--warm", type=int, default=200, help="warm requests per function and round"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold-rounds", type=int, default=15)
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=GAP_MS,
        help="least time from a warm response to the next request (default: %(default)s)",
    )
    parser.add_argument("--load-seconds", type=float, default=20.0, help="0: no load runs")
    parser.add_argument("--load-rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--variants",
        help="comma-separated functions to run, untraced among them (default: all); "
        "then only the warm and cold figures are measured",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the functions share CPUs with the emulator and the caller",
    )
    args = parser.parse_args(argv)
    if args.variants:
        chosen = args.variants.split(",")
        unknown = [v for v in chosen if v not in VARIANTS]
        if unknown or "untraced" not in chosen:
            parser.error(f"--variants: choose among {', '.join(VARIANTS)}, untraced included")
        for name in list(VARIANTS):
            if name not in chosen:
                del VARIANTS[name]
    pin(not args.no_pin)
    runs = []
    for memory in MEMORY:
        for label, delay in RECEIVERS.items():
            print(f"emulator: {memory} MB, receiver {label}", file=sys.stderr)
            runs.append(
                warm_and_cold(memory, delay, args.warm, args.rounds, args.cold_rounds, args.gap_ms)
            )
    spans: list[dict] = []
    cpu: dict[str, float] = {}
    load: list[dict] = []
    if not args.variants:
        print("spans delivered", file=sys.stderr)
        spans = [delivered(0), delivered(20)]
        pin(False)  # the in-process and load runs use the whole machine
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))
        print("in-process CPU", file=sys.stderr)
        cpu = cpu_in_process()
        if args.load_seconds > 0:
            load = under_load(args.load_seconds, args.load_rounds)
    text = render(runs, cpu, spans, load, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Delivery\n\n" + text + "\n")
    print("\n" + text + f"\n\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
