"""``dsqltrace plans``: the seed's question (why was its select slow?) answered with plans.

Fills a table of realistic size (100,000 todos by default) in an embedded
PostgreSQL of its own, then runs three statements in turns, on the
handlers' DSQL connection path with the toolkit's explains on
(``DSQLTRACE_EXPLAIN=slow,0``: each statement explained once):

- the seed's select: ``LIMIT 10`` with no ORDER BY and no index;
- a real "top 10" without an index on its order (``ORDER BY updated_at``);
- the Todo API's first page: ``ORDER BY created_at DESC, id DESC`` on the
  ``todos_created_at_id`` index, continued with a keyset cursor.

The spans go through the local collector into ``--out``; the report there
has a "Plans" section (each statement's plan summary, rows, rows read, p95
and, on DSQL, DPU) and one line per statement saying whether its cost grows
with the table.  It also prints what an explain costs against the statement
it explains.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

from dsqltrace.report.runs import SPANS_FILE

#: The statements compared, by the name of the block each runs in.
STATEMENTS = {
    "seed: select top 10 (no ORDER BY)": (
        "SELECT id, name, description, completed, created_at, updated_at FROM todos LIMIT %s"
    ),
    "top 10 by updated_at (no index)": (
        "SELECT id, name, description, completed, created_at, updated_at FROM todos "
        "ORDER BY updated_at DESC LIMIT %s"
    ),
}


def statements() -> dict[str, str]:
    """The seed's statements and the Todo API's first page (its own text, from the store)."""
    from handlers.store import SELECT_FIRST_PAGE

    return {**STATEMENTS, "Todo API: first page (keyset, index)": SELECT_FIRST_PAGE}


def fill(server: object, rows: int) -> int:
    """Make the table hold ``rows`` todos (spread over 30 days); returns how many it holds."""
    psql = server.psql  # type: ignore[attr-defined]
    have = int(psql("SELECT count(*) FROM todos").strip() or 0)
    if have < rows:
        missing = int(rows - have)  # an int of ours: nothing from outside reaches the SQL
        psql(
            "INSERT INTO todos (id, name, completed, created_at, updated_at) "
            "SELECT gen_random_uuid(), 'todo ' || g, g % 3 = 0, "
            "now() - (random() * interval '30 days'), now() - (random() * interval '30 days') "
            "FROM generate_series(1, " + str(missing) + ") g"
        )
        psql("ANALYZE todos")
    return int(psql("SELECT count(*) FROM todos").strip())


def measure(rounds: int, page: int) -> dict[str, list[float]]:
    """Run each statement ``rounds`` times (alternating order), traced and explained."""
    import time

    from handlers.database import Database
    from tracing import TracingConfig, explain, setup_tracing, shutdown_tracing, traced
    from tracing.runtime import current

    # Not a Lambda init: no cold-start phases, whatever the shell has set.
    setup_tracing(
        TracingConfig(service_name="dsqltrace-plans", explain="slow,0", coldstart_phases=False)
    )
    rt = current()
    assert rt is not None
    database = Database.from_env()
    timings: dict[str, list[float]] = {label: [] for label in statements()}
    try:
        conn = database.connection()
        order = list(statements().items())
        for r in range(rounds):
            for label, sql in order if r % 2 == 0 else reversed(order):
                with traced(label):
                    started = time.perf_counter()
                    conn.execute(sql, (page,)).fetchall()
                    timings[label].append((time.perf_counter() - started) * 1000)
                explain.run_pending()
            rt.delivery.flush()
    finally:
        database.close()
        shutdown_tracing()
    return timings


def run(args: argparse.Namespace) -> int:
    from dsqltrace.collector import spawn
    from dsqltrace.report import render
    from dsqltrace.serve import LOCAL, environ, local_database

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / SPANS_FILE).unlink(missing_ok=True)
    server, db_env = local_database(args.data or LOCAL / "plans-pg")
    collector: subprocess.Popen[str] | None = None
    try:
        count = fill(server, args.rows)
        print(f"==> {count:,} todos; {args.rounds} rounds of each statement", flush=True)
        collector, port = spawn(out / SPANS_FILE)
        env = {**db_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        with environ(env):
            timings = measure(args.rounds, 10)
    finally:
        if collector is not None:
            collector.terminate()
            collector.wait(10)
        server.stop()
    figures = render.write(out)
    print("\n".join(render.plans_text(figures)))
    for label, values in timings.items():
        print(f"  {label}: median {statistics.median(values):.2f} ms over {len(values)}")
    for row in figures["plans"]:
        if row["analyzed"] and row["p95_ms"]:
            print(
                f"explaining {row['span']} took {row['explain_ms']:.2f} ms, "
                f"{row['explain_ms'] / row['p95_ms']:.1f}× its p95: one more execution, "
                "once per statement per DSQLTRACE_EXPLAIN_INTERVAL_S per environment"
            )
    print(f"\nreport: {out / 'report.html'}")
    return 0 if figures["plans"] else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=100_000, help="todos in the table (100,000)")
    parser.add_argument("--rounds", type=int, default=50, help="runs of each statement (50)")
    parser.add_argument(
        "--data", type=Path, default=None, help="PostgreSQL folder (default .local/plans-pg)"
    )
    parser.add_argument("--out", type=Path, default=Path("plans"), help="run folder (plans/)")
