"""The report as a terminal table, ``report.json`` and a self-contained ``report.html``."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from dsqltrace.report import charts
from dsqltrace.report.figures import compute, waterfall_trace
from dsqltrace.report.runs import Run


def _ms(value: float) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
    )


def seed_line(figures: dict[str, Any]) -> str:
    seed, now = figures["seed"]["seed"], figures["seed"]["this_run"]
    return (
        f"Seed (Rust, DSQL preview, 30 VUs): insert p95 {seed['insert_p95_ms']} ms, "
        f"select p95 {seed['select_p95_ms']} ms, "
        f"first connection {seed['first_connection_ms']} ms  |  "
        f"this run: insert p95 {_ms(now['insert_p95_ms'])} ms, "
        f"select p95 {_ms(now['select_p95_ms'])} ms, "
        f"first connection (token + connect, median) {_ms(now['first_connection_ms'])} ms"
    )


def terminal(figures: dict[str, Any]) -> str:
    columns = ("count", "p50 ms", "p95 ms", "p99 ms", "max ms")
    head = f"{'span':<28} {columns[0]:>7} " + " ".join(f"{c:>9}" for c in columns[1:])
    lines = [head + " errors"]
    for name, s in figures["spans"].items():
        lines.append(
            f"{name:<28} {s['count']:>7} {_ms(s['p50']):>9} {_ms(s['p95']):>9} "
            f"{_ms(s['p99']):>9} {_ms(s['max']):>9} {s['errors']:>7}"
        )
    lines.append("")
    for label, s in (
        ("cold invocations", figures["cold_vs_warm"]["cold"]),
        ("warm invocations", figures["cold_vs_warm"]["warm"]),
    ):
        lines.append(
            f"{label:<28} {s['count']:>7} {_ms(s['p50']):>9} {_ms(s['p95']):>9} "
            f"{_ms(s['p99']):>9} {_ms(s['max']):>9}"
        )
    if figures["cold_start_phases"]:
        lines.append("")
        lines.append(
            "cold-start phases (median ms): "
            + ", ".join(
                f"{name} {_ms(s['p50'])}" for name, s in figures["cold_start_phases"].items()
            )
        )
    t = figures["totals"]
    lines.append("")
    lines.append(
        f"requests {t['requests']}, errors {t['errors']}, cold starts {t['cold_starts']}, "
        f"environments created {t['environments_created']}, spans received {t['spans_received']}, "
        f"late {t['spans_late']}, lost {t['spans_lost']}"
        + (f" ({t['spans_via_logs']} through log lines)" if t.get("spans_via_logs") else "")
    )
    lines.append(seed_line(figures))
    breakdown = figures.get("caller_breakdown") or {}
    if breakdown.get("requests"):
        lines.append("")
        lines.append(
            f"caller latency p50 {_ms(breakdown['caller']['p50'])} ms = "
            + " + ".join(f"{name} {_ms(s['p50'])}" for name, s in breakdown["parts"].items())
            + " (medians); after the response, billed: "
            + f"{_ms(breakdown['after_response']['p50'])} ms"
        )
    for function, report in (figures.get("lambda_report") or {}).items():
        lines.append(
            f"REPORT {function}: "
            + ", ".join(
                f"{label} p50 {_ms(s['p50'])} p95 {_ms(s['p95'])}"
                for label, s in report.items()
                if s["count"]
            )
        )
    for statement in figures.get("bottleneck") or []:
        lines.append(statement)
    if figures.get("plans"):
        lines.append("")
        lines.extend(plans_text(figures))
    return "\n".join(lines)


def plans_text(figures: dict[str, Any]) -> list[str]:
    """The "Plans" section for the terminal."""
    lines = ["plans (explained statements; p95 of their query spans):"]
    for row in figures.get("plans") or []:
        lines.append(
            f"  {row['span']}: p95 {_ms(row['p95_ms'])} ms, {row['summary']}, "
            f"rows {_num(row['rows'])}, read {_num(row['rows_read'])}"
            + (f", DPU {row['dpu_total']:.5f}" if row.get("dpu_total") is not None else "")
        )
    lines.extend(figures.get("plan_verdicts") or [])
    return lines


def _num(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if isinstance(value, int | float) else str(value)


def plans_table(plan_rows: list[dict[str, Any]]) -> str:
    """The "Plans" section's table."""
    header = [
        "statement",
        "span",
        "count",
        "p95 ms",
        "plan",
        "rows",
        "rows read",
        "storage lookups",
        "DPU (total)",
        "explain ms",
    ]
    rows = [
        [
            r["statement"] if len(r["statement"]) <= 120 else r["statement"][:119] + "…",
            r["span"],
            r["count"],
            _ms(r["p95_ms"]),
            r["summary"] or "",
            _num(r["rows"]),
            _num(r["rows_read"]),
            _num(r["storage_lookups"]),
            "–" if r["dpu_total"] is None else f"{r['dpu_total']:.5f}",
            _ms(r["explain_ms"]),
        ]
        for r in plan_rows
    ]
    return _table(rows, header)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stats_rows(table: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [
        [
            name,
            s["count"],
            _ms(s["p50"]),
            _ms(s["p95"]),
            _ms(s["p99"]),
            _ms(s["max"]),
            s.get("errors", ""),
        ]
        for name, s in table.items()
    ]


def page(figures: dict[str, Any], images: dict[str, bytes | None]) -> str:
    header = ["name", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>dsqltrace report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}",
        "table{border-collapse:collapse;margin:1rem 0}",
        "td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}",
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}",
        "img{max-width:100%;border:1px solid #eee;margin:.5rem 0}",
        ".seed{background:#fff8e1;padding:.6rem}",
        "</style></head><body>",
        f"<h1>Where the time goes</h1><p>Generated {html.escape(figures['generated'])}.</p>",
        f"<p class='seed'>{html.escape(seed_line(figures))}</p>",
        "<h2>Spans</h2>",
        _table(_stats_rows(figures["spans"]), header),
        "<h2>Routes (aws.lambda by resource)</h2>",
        _table(_stats_rows(figures["routes"]), header),
        "<h2>Cold versus warm</h2>",
        _table(_stats_rows(figures["cold_vs_warm"]), header),
        "<h2>Cold-start phases</h2>",
        _table(_stats_rows(figures["cold_start_phases"]), header),
    ]
    for key, title in (
        ("waterfall", "A cold start, phase by phase"),
        ("timeline", "Latency over time"),
        ("histograms", "Latency histograms"),
    ):
        data = images.get(key)
        if data:
            encoded = base64.b64encode(data).decode()
            parts.append(
                f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{encoded}'>"
            )
    parts.append("<h2>Client-side latency</h2>")
    parts.append(_table(_stats_rows(figures["client"]), header))
    breakdown = figures.get("caller_breakdown") or {}
    if breakdown.get("requests"):
        parts.append("<h2>The caller's latency, explained</h2>")
        parts.append(
            "<p>What the emulator saw of each request, joined to the caller's timing by request "
            "id. Delivery after the response is billed and keeps the environment busy, but the "
            "caller does not wait for it.</p>"
        )
        rows = {"caller (client-side)": breakdown["caller"], **breakdown["parts"]}
        rows["after the response (billed, not seen)"] = breakdown["after_response"]
        parts.append(_table(_stats_rows(rows), header))
    for statement in figures.get("bottleneck") or []:
        parts.append(f"<p class='seed'>{html.escape(statement)}</p>")
    report = figures.get("lambda_report") or {}
    if report:
        parts.append("<h2>Lambda REPORT (per invocation, emulated)</h2>")
        for function, table in report.items():
            parts.append(f"<h3>{html.escape(function)}</h3>")
            parts.append(
                _table(_stats_rows({k: v for k, v in table.items() if v["count"]}), header)
            )
    plan_rows = figures.get("plans") or []
    if plan_rows:
        parts.append("<h2>Plans</h2>")
        parts.append(
            "<p>Statements explained during the run (<code>DSQLTRACE_EXPLAIN</code>), with the "
            "p95 of their query spans. Rows read counts what the scans read, returned or "
            "filtered out; DPU is DSQL's Statement DPU Estimate (none on PostgreSQL).</p>"
        )
        parts.append(plans_table(plan_rows))
        for line in figures.get("plan_verdicts") or []:
            parts.append(f"<p class='seed'>{html.escape(line)}</p>")
    totals = figures["totals"]
    parts.append("<h2>Totals</h2>")
    parts.append(_table([[k.replace("_", " "), v] for k, v in totals.items()], ["total", "value"]))
    parts.append("</body></html>")
    return "".join(parts)


def write(run_folder: Path, out: Path | None = None) -> dict[str, Any]:
    """Compute the figures of a run, write report.json and report.html; return the figures."""
    out = out or run_folder
    out.mkdir(parents=True, exist_ok=True)
    run = Run.load(run_folder)
    figures = compute(run)
    images = {
        "waterfall": charts.waterfall(waterfall_trace(run)),
        "timeline": charts.latency_over_time(run),
        "histograms": charts.histograms(run),
    }
    (out / "report.json").write_text(json.dumps(_clean(figures), indent=2, allow_nan=False) + "\n")
    (out / "report.html").write_text(page(figures, images), encoding="utf-8")
    return figures


def _clean(value: Any) -> Any:
    """NaN (a figure with no data) as null, so that report.json is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
