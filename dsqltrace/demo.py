"""``dsqltrace demo``: the seed's experiment on one machine, start to finish.

Starts the embedded PostgreSQL (migrated), the local OTLP collector and the
two Todo functions in the Lambda emulator, drives them with virtual users (30
for 30 s by default, as the seed did), stops everything, and writes the
report (terminal table, ``report.html``, ``report.json``) to ``--out``.  The
exit code is 0 only when every step worked and no request failed on the
server side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dsqltrace.load import parse_mix, run_load
from dsqltrace.pg import free_port
from dsqltrace.report import render
from dsqltrace.report.runs import CLIENT_FILE, INVOCATIONS_FILE, SPANS_FILE
from dsqltrace.serve import ROOT, local_database


def _step(text: str) -> None:
    print(f"==> {text}", flush=True)


def _start(
    command: list[str], env: dict[str, str], ready: str, timeout: float = 90
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if ready in line:
            return process
    _stop(process)
    raise RuntimeError(f"{' '.join(command[2:4])} did not start")


def _stop(process: subprocess.Popen[str], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_services(
    processes: list[subprocess.Popen[str]],
    folder: Path,
    env: dict[str, str],
    *,
    traced: bool = True,
    max_environments: int | None = None,
    memory_mb: int | None = None,
    extra_env: dict[str, str] | None = None,
) -> str:
    """Start the collector (if ``traced``) and ``dsqltrace serve`` on free ports, writing into
    ``folder``; appends them to ``processes`` and returns the Function URL."""
    env = {**env, **(extra_env or {})}
    if traced:
        collector_port = free_port()
        processes.append(
            _start(
                [
                    sys.executable,
                    "-m",
                    "dsqltrace.collector",
                    "--port",
                    str(collector_port),
                    "--out",
                    str(folder / SPANS_FILE),
                ],
                env,
                "listening",
            )
        )
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{collector_port}"
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "dsqltrace.serve",
        "--port",
        str(port),
        "--records",
        str(folder / INVOCATIONS_FILE),
        "--log",
        str(folder / "emulator.log"),
    ]
    if max_environments is not None:
        command += ["--max-environments", str(max_environments)]
    if memory_mb is not None:
        command += ["--memory", str(memory_mb)]
    processes.append(_start(command, env, "listening"))
    return f"http://127.0.0.1:{port}"


def run(args: argparse.Namespace) -> int:
    try:
        mix = parse_mix(args.mix)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in (SPANS_FILE, INVOCATIONS_FILE, CLIENT_FILE, "emulator.log"):
        (out / name).unlink(missing_ok=True)
    processes: list[subprocess.Popen[str]] = []
    server = None
    proxy = None
    problems: list[str] = []
    try:
        _step("embedded PostgreSQL, schema")
        server, db_env = local_database()
        if args.dsql_proxy:
            from dsqltrace import dsqlproxy

            _step("DSQL's connection rules in front of it (rate, 60-minute age, IAM token)")
            proxy = dsqlproxy.front(server, db_env)
        _step("local OTLP collector; Lambda emulator with todo-insert and todo-select")
        url = start_services(
            processes,
            out,
            {**os.environ, **db_env},
            memory_mb=args.memory,
            extra_env={
                "OTEL_TRACES_EXPORTER": args.exporter,
                # Each statement explained once per environment: the report's Plans section.
                "DSQLTRACE_EXPLAIN": os.environ.get("DSQLTRACE_EXPLAIN", "slow,0"),
            },
        )
        _step(
            f"load: {args.users} virtual users for {args.duration:g} s ({args.mix}) against {url}"
        )
        result = asyncio.run(
            run_load(
                url,
                url,
                users=args.users,
                duration_s=args.duration,
                requests=None,
                mix=mix,
                out=out / CLIENT_FILE,
            )
        )
        if not result.requests:
            problems.append("no request was sent")
        if result.server_errors:
            problems.append(
                f"{result.server_errors} requests failed on the server side "
                f"(statuses {dict(sorted(result.statuses.items()))}); see {out / 'emulator.log'}"
            )
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        _step("stopping the emulator, the collector and PostgreSQL")
        for process in reversed(processes):
            _stop(process)
        if proxy is not None:
            from dsqltrace import dsqlproxy

            said = dsqlproxy.stop(proxy)
            print(said.splitlines()[-1] if said else "", flush=True)
        if server is not None:
            server.stop()
    if not (out / SPANS_FILE).exists():
        problems.append("the collector stored no spans")
    else:
        _step("report")
        figures = render.write(out)
        print(render.terminal(figures))
        print(f"\nreport: {out / 'report.html'}, {out / 'report.json'}")
        if figures["totals"]["spans_received"] == 0:
            problems.append("no span reached the collector")
    for problem in problems:
        print(f"demo failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--users", type=int, default=30, help="virtual users (default 30, the seed's)"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument(
        "--memory",
        type=int,
        default=256,
        help="function memory, MB (default 256): CPU is memory/1769 of one core, as in Lambda",
    )
    parser.add_argument(
        "--mix", default="post=1,get=1", help="operation weights (default post=1,get=1)"
    )
    parser.add_argument(
        "--exporter",
        choices=("otlp", "stdout-otlp"),
        default="otlp",
        help="how the functions deliver spans: OTLP to the collector (default), or one "
        "otlp-stdout log line per export, forwarded to it by the emulator's log subscription",
    )
    parser.add_argument(
        "--no-dsql-proxy",
        dest="dsql_proxy",
        action="store_false",
        help="connect straight to PostgreSQL, without DSQL's connection rules in between",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="run folder (default report/)"
    )
