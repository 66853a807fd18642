"""The report's figures, computed from a :class:`~dsqltrace.report.runs.Run`."""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from typing import Any

from dsqltrace.report.runs import Run, Span

#: The seed's figures (Rust on DSQL preview, 30 virtual users, read off Datadog graphs).
SEED = {"insert_p95_ms": 19.8, "select_p95_ms": 193.0, "first_connection_ms": "200-300"}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def stats(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3) if values else math.nan,
    }


def _traces(spans: list[Span]) -> dict[str, list[Span]]:
    traces: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    return traces


def init_phases(trace: list[Span]) -> dict[str, float]:
    """Durations (ms) of a cold start's phases: imports (before the first phase), token, connect."""
    init = next((s for s in trace if s.name == "aws.lambda.init"), None)
    if init is None:
        return {}
    phases = sorted(
        (s for s in trace if s.attributes.get("aws.lambda.init_phase")), key=lambda s: s.start_ns
    )
    first = phases[0].start_ns if phases else init.end_ns
    result = {"init": init.duration_ms, "imports": (first - init.start_ns) / 1e6}
    for span in phases:
        result[span.name] = result.get(span.name, 0.0) + span.duration_ms
    root = next((s for s in trace if s.is_root), None)
    queries = [
        s
        for s in trace
        if s.kind == 3
        and s.attributes.get("db.operation.name")
        and not s.attributes.get("aws.lambda.init_phase")
    ]
    if queries:
        result["first query"] = min(queries, key=lambda s: s.start_ns).duration_ms
    if root is not None:
        result["first invocation"] = root.duration_ms
    return result


#: The span names of explains (``tracing.explain``).
EXPLAIN_SPANS = ("dsql.explain", "postgresql.explain")


def plans(spans: list[Span]) -> list[dict[str, Any]]:
    """Each explained statement: its plan (the latest explain's) beside its queries' p95."""
    durations: dict[str, list[float]] = defaultdict(list)
    names: dict[str, str] = {}
    explained: dict[str, Span] = {}
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    for span in spans:
        text = span.attributes.get("db.query.text")
        if not isinstance(text, str):
            continue
        if span.name in EXPLAIN_SPANS:
            latest = explained.get(text)
            if latest is None or span.start_ns > latest.start_ns:
                explained[text] = span
        elif span.kind == 3 and span.attributes.get("operation.name") == "postgresql.query":
            durations[text].append(span.duration_ms)
            # Named after the block it ran in ("Query Todos"), when that is not the root.
            parent = by_id.get((span.trace_id, span.parent_id))
            names[text] = parent.name if parent is not None and not parent.is_root else span.name
    rows = []
    for text, span in explained.items():
        a = span.attributes
        times = durations.get(text, [])
        rows.append(
            {
                "statement": text,
                "span": names.get(text, span.name),
                "count": len(times),
                "p95_ms": round(percentile(times, 95), 3) if times else None,
                "summary": a.get("dsql.plan.summary"),
                "rows": a.get("dsql.plan.rows"),
                "rows_read": a.get("dsql.plan.rows_read"),
                "storage_lookups": a.get("dsql.plan.storage_lookups"),
                "dpu_total": a.get("dsql.dpu.total"),
                "analyzed": a.get("dsql.plan.analyzed"),
                "explain_ms": round(span.duration_ms, 3),
            }
        )
    rows.sort(key=lambda r: -(r["p95_ms"] or 0.0))
    return rows


def plan_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per analysed read: does its cost grow with the table, from what it read."""
    lines = []
    for row in rows:
        read, produced = row.get("rows_read"), row.get("rows")
        if not row.get("analyzed") or read is None or produced is None:
            continue
        summary, name = row["summary"], row["span"]
        if read >= 10 * max(produced, 1):
            lines.append(
                f"{name} ({summary}) reads {read:,.0f} rows to return {produced:,.0f}: "
                "its cost grows with the table."
            )
        elif "ORDER BY" not in row["statement"].upper() and "Index" not in summary:
            lines.append(
                f"{name} ({summary}) reads {read:,.0f} rows to return {produced:,.0f}, but "
                "without ORDER BY they are whichever rows storage gives first, not the newest."
            )
        else:
            lines.append(
                f"{name} ({summary}) reads {read:,.0f} rows to return {produced:,.0f}: an "
                "index gives the rows in the order asked, so the table's size does not matter."
            )
    return lines


def compute(run: Run) -> dict[str, Any]:
    """Everything report.json holds."""
    spans = run.spans
    by_operation: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    for span in spans:
        by_operation[span.operation].append(span.duration_ms)
        if span.error:
            errors[span.operation] += 1
    span_table = {
        name: {**stats(values), "errors": errors.get(name, 0)}
        for name, values in sorted(by_operation.items())
    }

    roots = [s for s in spans if s.is_root]
    routes: dict[str, list[float]] = defaultdict(list)
    for root in roots:
        routes[root.name].append(root.duration_ms)
    cold = [r.duration_ms for r in roots if r.attributes.get("faas.coldstart") is True]
    warm = [r.duration_ms for r in roots if r.attributes.get("faas.coldstart") is not True]
    functions: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"cold": [], "warm": []})
    for root in roots:
        functions[root.service]["cold" if root.attributes.get("faas.coldstart") else "warm"].append(
            root.duration_ms
        )

    traces = _traces(spans)
    cold_traces = [traces[r.trace_id] for r in roots if r.attributes.get("faas.coldstart") is True]
    phases = [init_phases(t) for t in cold_traces]
    phase_names = sorted({k for p in phases for k in p})
    phase_table = {name: stats([p[name] for p in phases if name in p]) for name in phase_names}

    # Late and lost spans: against the emulator's record of each invocation.  Late is after
    # the environment froze: the last ``next`` of the runtime and its extensions (``done_ns``),
    # which is the response itself when no extension delivers after it.
    ends = {
        i["request_id"]: i.get("done_ns") or i["end_ns"]
        for i in run.invocations
        if i.get("outcome") in ("response", "error")
    }
    root_of_trace = {r.trace_id: r for r in roots}
    late = 0
    for span in spans:
        if span.via == "logs":  # out of the function as a log line: forwarded later by design
            continue
        root = root_of_trace.get(span.trace_id)
        end = ends.get(str(root.attributes.get("faas.invocation_id"))) if root else None
        if end is not None and span.received_ns > end:
            late += 1
    seen_roots = {str(r.attributes.get("faas.invocation_id")) for r in roots}
    lost_roots = sum(1 for request_id in ends if request_id not in seen_roots)
    known = {(s.trace_id, s.span_id) for s in spans}
    orphans = sum(
        1 for s in spans if s.parent_id and not s.is_root and (s.trace_id, s.parent_id) not in known
    )

    client_latency = [c["latency_ms"] for c in run.client]
    client_errors = sum(1 for c in run.client if c["status"] >= 500 or c["status"] == 0)
    client_by_op: dict[str, list[float]] = defaultdict(list)
    for c in run.client:
        client_by_op[c["op"]].append(c["latency_ms"])

    first_connection = [
        p.get("dsql.token.generate", 0.0) + p.get("dsql.connect", 0.0)
        for p in phases
        if "dsql.connect" in p
    ]
    this_run = {
        "insert_p95_ms": round(percentile(routes.get("POST /todos", []), 95), 2),
        "select_p95_ms": round(percentile(routes.get("GET /todos", []), 95), 2),
        "first_connection_ms": round(percentile(first_connection, 50), 2),
    }
    invocations = [i for i in run.invocations if i.get("outcome") != "throttled"]
    return {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "spans": span_table,
        "routes": {name: stats(v) for name, v in sorted(routes.items())},
        "cold_vs_warm": {"cold": stats(cold), "warm": stats(warm)},
        "functions": {
            name: {k: stats(v) for k, v in d.items()} for name, d in sorted(functions.items())
        },
        "cold_start_phases": phase_table,
        "client": {
            "all": stats(client_latency),
            **{op: stats(v) for op, v in sorted(client_by_op.items())},
        },
        "totals": {
            "requests": len(run.client) or len(invocations),
            "errors": client_errors
            if run.client
            else sum(1 for i in invocations if i["outcome"] != "response"),
            "invocations": len(invocations),
            "cold_starts": sum(1 for r in roots if r.attributes.get("faas.coldstart") is True),
            "cold_invocations_emulator": sum(1 for i in invocations if i.get("cold")),
            "environments_created": len(run.environments),
            "spans_received": len(spans),
            "spans_late": late,
            "spans_via_logs": sum(1 for s in spans if s.via == "logs"),
            "spans_lost": lost_roots + orphans,
        },
        "seed": {"seed": SEED, "this_run": this_run},
        "lambda_report": lambda_report(invocations),
        "plans": (plan_rows := plans(spans)),
        "plan_verdicts": plan_verdicts(plan_rows),
        "caller_breakdown": caller_breakdown(run),
        "bottleneck": bottleneck(run),
    }


#: The fields of the emulator's REPORT records, as Lambda names them.
REPORT_FIELDS = {
    "duration_ms": "Duration",
    "billed_ms": "Billed Duration",
    "post_runtime_ms": "Post-runtime extension duration",
    "init_ms": "Init Duration (cold)",
    "restore_ms": "Restore Duration (SnapStart cold)",
    "max_memory_mb": "Max Memory Used (MB)",
    "cpu_ms": "CPU used",
}


def lambda_report(invocations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per function, the REPORT figures' distribution (as Lambda's REPORT lines give them)."""
    out: dict[str, dict[str, Any]] = {}
    for function in sorted({i["function"] for i in invocations}):
        mine = [i for i in invocations if i["function"] == function]
        out[function] = {
            label: stats([float(i[key]) for i in mine if key in i])
            for key, label in REPORT_FIELDS.items()
        }
    return out


#: The parts the caller's latency is made of, in order.
CALLER_PARTS = (
    "waiting for an environment",
    "new environment (process and init)",
    "handler (the runtime's work)",
    "front and client (HTTP, the load generator)",
)


def caller_breakdown(run: Run) -> dict[str, Any]:
    """The caller's latency split by what the emulator saw of each request, and what came
    after the response (billed, not seen by the caller)."""
    records = {i["request_id"]: i for i in run.invocations if "delivered_ns" in i}
    parts: dict[str, list[float]] = {name: [] for name in CALLER_PARTS}
    after: list[float] = []
    callers: list[float] = []
    for c in run.client:
        i = records.get(c.get("request_id") or "")
        if i is None or "response_ns" not in i:
            continue
        wait = (i["assigned_ns"] - i["start_ns"]) / 1e6
        handoff = (i["delivered_ns"] - i["assigned_ns"]) / 1e6
        handler = (i["response_ns"] - i["delivered_ns"]) / 1e6
        seen = (i["response_ns"] - i["start_ns"]) / 1e6
        parts[CALLER_PARTS[0]].append(wait)
        parts[CALLER_PARTS[1]].append(handoff)
        parts[CALLER_PARTS[2]].append(handler)
        parts[CALLER_PARTS[3]].append(max(0.0, c["latency_ms"] - seen))
        if "done_ns" in i:
            after.append((i["done_ns"] - i["response_ns"]) / 1e6)
        callers.append(c["latency_ms"])
    return {
        "requests": len(callers),
        "caller": stats(callers),
        "parts": {name: stats(values) for name, values in parts.items()},
        "after_response": stats(after),
    }


def bottleneck(run: Run) -> list[str]:
    """Plain statements of what limited the run, when it was not the functions."""
    said: list[str] = []
    busy = run.load_summary.get("machine_cpu_busy")
    if isinstance(busy, int | float) and busy >= 0.9:
        said.append(
            f"The machine was the bottleneck: its CPU was {100 * busy:.0f} % busy during the "
            "load, so requests queued for CPU (load generator, emulator, functions and database "
            "share it)."
        )
    throttled = sum(1 for c in run.client if c.get("status") == 429)
    if throttled:
        said.append(f"Environments were at their limit: {throttled} requests were throttled (429).")
    breakdown = caller_breakdown(run)
    caller = breakdown["caller"]["p50"]
    handler = breakdown["parts"][CALLER_PARTS[2]]["p50"]
    if breakdown["requests"] and caller and not math.isnan(caller) and handler < caller / 2:
        said.append(
            f"Most of the caller's latency was outside the handler: at the median {caller:.1f} ms "
            f"seen by the caller against {handler:.1f} ms in the handler."
        )
    return said


def waterfall_trace(run: Run) -> list[Span]:
    """A real cold-start trace: the one whose init took the median time."""
    traces = _traces(run.spans)
    cold = [
        traces[r.trace_id]
        for r in run.spans
        if r.is_root and r.attributes.get("faas.coldstart") is True
    ]
    with_init = [t for t in cold if any(s.name == "aws.lambda.init" for s in t)]
    if not with_init:
        return []
    with_init.sort(key=lambda t: next(s.duration_ms for s in t if s.name == "aws.lambda.init"))
    return sorted(with_init[len(with_init) // 2], key=lambda s: s.start_ns)
