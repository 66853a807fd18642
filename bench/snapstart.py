"""SnapStart in the emulator: the first response after a restore against an ordinary cold start.

    python -m bench.snapstart [--rounds 15] [--ids 200000] [--out bench/results/snapstart.md]

Four functions run the Todo API's select handler (``GET /todos``, the DSQL
path: an IAM token as the password, TLS, against the local PostgreSQL) in
one emulator: on-demand and SnapStart, each traced (after-response delivery
to a local collector) and untraced (``OTEL_SDK_DISABLED=true``).  Each round
stops every environment and times each function's next request from the
caller's side, in an order that alternates between rounds: for on-demand a
new process and its init, for SnapStart a restore of the snapshot published
at startup (a fork here; see :mod:`dsqltrace.emulator.snapshot`).  Medians,
and the paired median of traced minus untraced.  These are emulated
figures: a fork costs less than loading a microVM snapshot's pages.

Then, in this process: what the toolkit's hooks cost (before the snapshot:
the init trace, delivered to memory; after restore: reseeding and the
restore record), and what a trace id and a span id cost from the SDK's
generator (Python's ``random``, reseeded after restore) against one that
reads the OS for every id (whose state nothing could copy).
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
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from bench.coldstart import start_collector
from dsqltrace.report.figures import percentile

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "snapstart.md"
VARIANTS = {
    "on-demand, untraced": (False, {"OTEL_SDK_DISABLED": "true"}),
    "on-demand, traced": (False, {}),
    "SnapStart, untraced": (True, {"OTEL_SDK_DISABLED": "true"}),
    "SnapStart, traced": (True, {}),
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).replace("--", "-")


def _database() -> tuple[Any, dict[str, str]]:
    """A throwaway PostgreSQL with the Todo API's schema, and the DSQL settings reaching it."""
    from dsqltrace.serve import local_database

    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-bench-pg-"))
    folder.chmod(0o755)  # as root the server runs as `postgres`, which must enter it
    return local_database(folder / "pg")


def emulated(rounds: int) -> dict[str, Any]:
    """First responses of new environments, per variant; REPORT records; restore spans."""
    pg, db_env = _database()
    spans_file = Path(tempfile.mkdtemp()) / "spans.jsonl"
    collector, port = start_collector(spans_file)
    records = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    first: dict[str, list[float]] = {v: [] for v in VARIANTS}
    database = {**db_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}

    async def run() -> None:
        import httpx

        from dsqltrace.emulator.function import FunctionConfig
        from dsqltrace.emulator.server import Emulator, Route

        emulators: dict[str, tuple[Emulator, str]] = {}
        for name, (snap, env) in VARIANTS.items():  # one each: the handler routes by path
            config = FunctionConfig(
                _slug(name),
                "handlers.select.handler",
                env={**database, "OTEL_SERVICE_NAME": _slug(name), **env},
                snapstart=snap,
                limit_cpu=False,
            )
            emulator = Emulator(
                [config],
                [Route(frozenset(), "/", _slug(name))],
                task_root=ROOT,
                records=records,
                log=io.StringIO(),
            )
            emulators[name] = (emulator, f"http://127.0.0.1:{await emulator.start()}")
        try:
            for name, (emulator, _) in emulators.items():
                if VARIANTS[name][0]:
                    await emulator.functions[_slug(name)].published()
            async with httpx.AsyncClient(timeout=60) as client:
                for r in range(rounds + 1):
                    order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                    for name in order:
                        emulator, url = emulators[name]
                        function = emulator.functions[_slug(name)]
                        await asyncio.gather(*(e.stop() for e in list(function.environments)))
                        started = time.perf_counter()
                        response = await client.get(f"{url}/todos")
                        elapsed = (time.perf_counter() - started) * 1000
                        assert response.status_code == 200, response.text
                        if r:  # the first round warms the machine's caches
                            first[name].append(elapsed)
        finally:
            for emulator, _ in emulators.values():
                await emulator.stop()

    try:
        asyncio.run(run())
    finally:
        collector.terminate()
        collector.wait(10)
        pg.destroy()
    from dsqltrace.report.runs import read_spans

    rows = [json.loads(line) for line in records.read_text().splitlines() if line]
    records.unlink()
    spans = read_spans(spans_file) if spans_file.exists() else []
    restores = [s.duration_ms for s in spans if s.name == "aws.lambda.snapstart_restore"]
    hooks = [s.duration_ms for s in spans if s.name == "aws.lambda.after_restore_hook"]
    cold = [r for r in rows if r.get("record") == "invocation" and r.get("cold")]
    out: dict[str, Any] = {"first_ms": first, "restore_span_ms": restores, "hook_span_ms": hooks}
    out["report"] = {
        name: {
            key: [r[key] for r in cold if r["function"] == _slug(name) and key in r]
            for key in ("init_ms", "restore_ms", "duration_ms")
        }
        for name in VARIANTS
    }
    out["published_init_ms"] = [r["init_ms"] for r in rows if r.get("record") == "snapshot"]
    return out


def in_process(ids: int) -> dict[str, float]:
    """The hooks' cost and the cost per id, in microseconds (best of 5 repeats)."""
    import random

    import snapshot_restore_py
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    from tracing import coldstart, runtime, snapstart, traced
    from tracing.testing import capture_spans, reset_tracing

    os.environ.update(
        {"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start", "AWS_LAMBDA_FUNCTION_NAME": "bench"}
    )
    out: dict[str, float] = {}
    before = snapshot_restore_py.get_before_snapshot()
    after = snapshot_restore_py.get_after_restore()

    def setup() -> Any:
        reset_tracing()
        capture_spans()
        with traced("dsql.connect"):  # an init phase, as the handlers record
            pass
        return runtime.current()

    samples_before: list[float] = []
    samples_after: list[float] = []
    for _ in range(200):
        setup()
        func, args, kwargs = before[0]
        started = time.perf_counter()
        func(*args, **kwargs)
        samples_before.append(time.perf_counter() - started)
        coldstart._state.invoked = True
        func, args, kwargs = after[0]
        started = time.perf_counter()
        func(*args, **kwargs)
        samples_after.append(time.perf_counter() - started)
    reset_tracing()
    out["before_snapshot_us"] = statistics.median(samples_before) * 1e6
    out["after_restore_us"] = statistics.median(samples_after) * 1e6
    out["reseed_us"] = min(timeit.repeat(snapstart.reseed, number=2000, repeat=5)) / 2000 * 1e6
    generator = RandomIdGenerator()

    def sdk_ids() -> None:
        generator.generate_trace_id()
        generator.generate_span_id()

    def os_ids() -> None:
        int.from_bytes(os.urandom(16), "big")
        int.from_bytes(os.urandom(8), "big")

    random.seed()
    out["ids_random_us"] = min(timeit.repeat(sdk_ids, number=ids, repeat=5)) / ids * 1e6
    out["ids_urandom_us"] = min(timeit.repeat(os_ids, number=ids, repeat=5)) / ids * 1e6
    return out


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "–"


def render(emu: dict[str, Any], local: dict[str, float], rounds: int, ids: int) -> str:
    first = emu["first_ms"]
    lines = [
        "# SnapStart (emulated)",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}), "
        f"`python -m bench.snapstart --rounds {rounds} --ids {ids}`.  Emulated figures: a "
        "restore here is a fork of the snapshot's process, which costs less than loading "
        "a microVM snapshot; on-demand cold starts include a new interpreter and init.",
        "",
        "First response of a new environment, from the caller's side (Todo API, "
        f"`GET /todos` on the DSQL path; {rounds} rounds, medians):",
        "",
        "| environment | first response (ms) | p95 (ms) | Init / Restore Duration (ms) |",
        "|---|---|---|---|",
    ]
    for name in VARIANTS:
        report = emu["report"][name]
        phase = report["restore_ms"] or report["init_ms"]
        label = "Restore" if report["restore_ms"] else "Init"
        lines.append(
            f"| {name} | {_med(first[name])} | {percentile(first[name], 95):.1f} | "
            f"{label} {_med(phase)} |"
        )

    def paired(traced: str, untraced: str) -> float:
        return statistics.median(a - b for a, b in zip(first[traced], first[untraced], strict=True))

    od = paired("on-demand, traced", "on-demand, untraced")
    ss = paired("SnapStart, traced", "SnapStart, untraced")
    ratio = statistics.median(first["SnapStart, traced"]) / statistics.median(
        first["on-demand, traced"]
    )
    lines += [
        "",
        f"Tracing adds {od:+.1f} ms to an on-demand cold start and {ss:+.1f} ms to a restore "
        "(paired medians, traced minus untraced).  A traced restore answers in "
        f"{ratio:.2f}× the time of a traced on-demand cold start.  The snapshot's init "
        f"(run once, at publication) took {_med(emu['published_init_ms'])} ms (median over "
        "the two SnapStart functions).",
        "",
        f"In the traces: `aws.lambda.snapstart_restore` median {_med(emu['restore_span_ms'])} ms, "
        "of which the handlers' after-restore hook (`aws.lambda.after_restore_hook`: a new "
        f"token and a new connection) {_med(emu['hook_span_ms'])} ms.",
        "",
        "The toolkit's hooks, in-process (medians of 200):",
        "",
        "| what | µs |",
        "|---|---|",
        f"| before the snapshot: the init trace built and delivered (to memory), "
        f"connection closed | {local['before_snapshot_us']:.0f} |",
        f"| after restore: reseed, restore record, hooks wrapped, delivery resumed | "
        f"{local['after_restore_us']:.0f} |",
        f"| of which reseeding `random` from the OS | {local['reseed_us']:.1f} |",
        "",
        f"Cost per id (a trace id and a span id; best of 5 × {ids}):",
        "",
        "| generator | µs per trace id + span id |",
        "|---|---|",
        f"| the SDK's `RandomIdGenerator` (`random`, reseeded after restore) | "
        f"{local['ids_random_us']:.3f} |",
        f"| from the OS for every id (`os.urandom`) | {local['ids_urandom_us']:.3f} |",
        "",
        "The toolkit reseeds once per restore and keeps the SDK's generator: the same cost "
        "per id as without SnapStart, and spans the OpenTelemetry API makes elsewhere "
        "(other instrumentations) get unique ids too, since they draw from the same `random`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ids", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    emu = emulated(args.rounds)
    local = in_process(args.ids)
    text = render(emu, local, args.rounds, args.ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
