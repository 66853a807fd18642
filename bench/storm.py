"""A cold-start storm against DSQL's connection rate: many environments starting at once.

    python -m bench.storm [--environments 100] [--limits 100:1000 20:10]
                          [--out bench/results/storm.md]

The local stack with :mod:`dsqltrace.dsqlproxy` in front of PostgreSQL,
enforcing a connection rate; ``--environments`` POSTs sent at once to the
insert function, which has no environment yet, so each of them starts one.
Each environment connects during init (retrying 53400 with backoff and
jitter), and again on its request if init could not.  What the run shows: the
answers (only 201 and the documented 503 with ``Retry-After`` are allowed),
every acknowledged write found in the table, the refused connection attempts
and the retries in the spans, the proxy's counts and its CPU per connection
and per query.  Two storms by default: DSQL's own limits (100 new
connections a second, burst 1,000), which 100 environments do not reach, and
20 a second with a burst of 10, which they do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "storm.md"


def storm(environments: int, rate: float, burst: int) -> dict[str, Any]:
    """Run one storm; its figures."""
    import httpx

    from dsqltrace.stack import LocalStack
    from tracing import names

    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-storm-"))
    folder.chmod(0o755)  # the embedded server runs as `postgres` when we are root
    stack = LocalStack(
        folder,
        dsql_proxy={"rate": rate, "burst": burst},
        max_environments=environments + 10,
    ).start()
    results: list[tuple[str, int, dict[str, str], dict[str, Any]]] = []
    try:

        async def one(client: httpx.AsyncClient, name: str) -> None:
            response = await client.post(f"{stack.url}/todos", json={"name": name})
            body = response.json() if response.content else {}
            results.append((name, response.status_code, dict(response.headers), body))

        async def all_at_once() -> float:
            started = time.monotonic()
            limits = httpx.Limits(max_connections=environments + 10)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                await asyncio.gather(
                    *(one(client, f"storm {uuid.uuid4().hex[:12]}") for _ in range(environments))
                )
            return time.monotonic() - started

        elapsed = asyncio.run(all_at_once())
        stored = stack.postgres.psql("SELECT name FROM todos WHERE name LIKE 'storm %'")
        stack.wait_for_spans(lambda s: len([x for x in s if x.is_root]) >= len(results), 20)
        created = stack.emulator.environments_created() if stack.emulator else {}
    finally:
        stack.stop()  # every environment delivers what it kept before it ends
    spans = stack.spans()
    statuses = Counter(status for _, status, _, _ in results)
    acknowledged = {name for name, status, _, _ in results if status == 201}
    in_table = {line.strip() for line in stored.splitlines() if line.strip()}
    connects = [s for s in spans if s.name == names.DSQL_CONNECT]
    refused = [s for s in connects if s.attributes.get(names.DB_RESPONSE_STATUS_CODE) == "53400"]
    retried = [  # the attempts that succeeded after refused ones
        int(s.attributes[names.DSQL_CONNECT_RETRY_COUNT])
        for s in connects
        if s.attributes.get(names.DSQL_CONNECT_RETRY_COUNT)
        and not s.attributes.get(names.DB_RESPONSE_STATUS_CODE)
        and not s.error
    ]
    counts = {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", stack.proxy_report.split(";")[0])}
    return {
        "environments": environments,
        "rate": rate,
        "burst": burst,
        "elapsed_s": elapsed,
        "statuses": dict(statuses),
        "retry_after": all(h.get("retry-after") for _, st, h, _ in results if st == 503),
        "acknowledged": len(acknowledged),
        "lost": len(acknowledged - in_table),
        "environments_created": sum(created.values()) if isinstance(created, dict) else created,
        "refused_attempts": len(refused),
        "retried_connects": len(retried),
        "max_retries": max(retried, default=0),
        "proxy": counts,
        "median_ms": statistics.median(
            [s.duration_ms for s in spans if s.is_root] or [float("nan")]
        ),
    }


def _threads_cpu_ns(pid: int) -> int:
    """CPU time the live threads of a process have run, in ns (their ``schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            continue  # a thread that just ended
    return total


def _process_cpu_ns(pid: int) -> int:
    """CPU time of a process, ended threads included (``/proc/<pid>/stat``, in ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def proxy_costs(connections: int, queries: int) -> dict[str, float]:
    """The proxy's CPU per connection and per query, and the latency it adds (medians)."""
    import psycopg

    from dsqltrace import dsqlproxy
    from dsqltrace.serve import local_database
    from handlers.store import SELECT_FIRST_PAGE
    from handlers.token import presign

    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-proxy-"))
    folder.chmod(0o755)  # the embedded server runs as `postgres` when we are root
    pg, _ = local_database(folder / "pg")  # migrated: the Todo API's own table
    secret = "bench-secret-for-signing-only"
    process, port = dsqlproxy.start(pg, secret_key=secret)
    try:

        def options(via_proxy: bool) -> dict[str, Any]:
            return {
                "host": "localhost",
                "port": port if via_proxy else pg.port,
                "user": "admin",
                "dbname": "postgres",
                "sslmode": "verify-full",
                "sslrootcert": str(pg.ca_file),
                "password": presign("localhost", "us-east-1", "DbConnectAdmin", "AKID", secret),
                "autocommit": True,
            }

        out: dict[str, float] = {}
        for via in (False, True):
            times = []
            before = _process_cpu_ns(process.pid)  # each connection's threads end with it
            for _ in range(connections):
                started = time.perf_counter()
                psycopg.connect(**options(via)).close()
                times.append((time.perf_counter() - started) * 1000)
            if via:
                spent = _process_cpu_ns(process.pid) - before
                out["cpu_per_connection_ms"] = spent / connections / 1e6
            out[f"connect_ms_{'proxy' if via else 'direct'}"] = statistics.median(times)
            with psycopg.connect(**options(via)) as conn:
                times = []
                before = _threads_cpu_ns(process.pid)  # the connection's threads live on
                for _ in range(queries):
                    started = time.perf_counter()
                    conn.execute(SELECT_FIRST_PAGE, (10,)).fetchall()
                    times.append((time.perf_counter() - started) * 1e6)
                if via:
                    spent = _threads_cpu_ns(process.pid) - before
                    out["cpu_per_query_us"] = spent / queries / 1e3
                out[f"query_us_{'proxy' if via else 'direct'}"] = statistics.median(times)
    finally:
        dsqlproxy.stop(process)
        pg.destroy()
    return out


def render(storms: list[dict[str, Any]], costs: dict[str, float], args: argparse.Namespace) -> str:
    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(str(value(f)) for f in storms) + " |"

    heads = " | ".join(f"rate {f['rate']:g}/s, burst {f['burst']}" for f in storms)
    limits = " ".join(f"{f['rate']:g}:{f['burst']}" for f in storms)
    return (
        "\n".join(
            [
                "# Cold-start storm against DSQL's connection rate (emulated)",
                "",
                f"Measured {datetime.date.today().isoformat()} on {platform.node()} "
                f"({os.cpu_count()} cores, Python {platform.python_version()}), "
                f"`python -m bench.storm --environments {args.environments} --limits {limits}`. "
                "DSQL's own limits (100 new connections a second, burst 1,000) beside scaled-down "
                "ones that make a storm of this size meet the limit.",
                "",
                f"| figure | {heads} |",
                "|---|" + "---|" * len(storms),
                row("POSTs sent at once (each a cold start)", lambda f: f["environments"]),
                row("environments created", lambda f: f["environments_created"]),
                row(
                    "answers",
                    lambda f: ", ".join(f"{k}: {v}" for k, v in sorted(f["statuses"].items())),
                ),
                row("503s with Retry-After", lambda f: "all" if f["retry_after"] else "not all"),
                row("acknowledged writes / lost", lambda f: f"{f['acknowledged']} / {f['lost']}"),
                row(
                    "connection attempts refused (53400, in the spans)",
                    lambda f: f["refused_attempts"],
                ),
                row(
                    "connections made after refusals / most refusals before one",
                    lambda f: f"{f['retried_connects']} / {f['max_retries']}",
                ),
                row(
                    "the proxy's counts",
                    lambda f: ", ".join(f"{k} {v}" for k, v in f["proxy"].items()),
                ),
                row("storm over in", lambda f: f"{f['elapsed_s']:.1f} s"),
                "",
                f"The proxy's cost ({args.connections} connections, then {args.queries} queries "
                "of the Todo API's first page on one connection; medians; the proxy's CPU from "
                "/proc: the process's ticks for connections, its threads' schedstat for queries):",
                "",
                "| | direct to PostgreSQL | through the proxy | proxy CPU |",
                "|---|---|---|---|",
                f"| a new connection (TLS, token) | {costs['connect_ms_direct']:.2f} ms | "
                f"{costs['connect_ms_proxy']:.2f} ms | {costs['cpu_per_connection_ms']:.2f} ms |",
                f"| a query | {costs['query_us_direct']:.0f} µs | "
                f"{costs['query_us_proxy']:.0f} µs | {costs['cpu_per_query_us']:.0f} µs |",
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--environments", type=int, default=100)
    parser.add_argument(
        "--limits",
        nargs="+",
        default=["100:1000", "20:10"],
        help="rate:burst pairs, one storm each (default: DSQL's, and 20:10)",
    )
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    storms = []
    for pair in args.limits:
        rate, _, burst = pair.partition(":")
        storms.append(storm(args.environments, float(rate), int(burst)))
    costs = proxy_costs(args.connections, args.queries)
    text = render(storms, costs, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    sys.stdout.write(text)
    ok = all(f["lost"] == 0 and set(f["statuses"]) <= {201, 503} for f in storms)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
