"""End to end: `dsqltrace demo` with a few users for a few seconds, then its report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from handlers import names as app_names
from tests.agent import ROOT
from tracing import names


@pytest.fixture(scope="module")
def demo_run() -> Path:
    data = Path(tempfile.mkdtemp(prefix="dsqltrace-demo-"))
    data.chmod(0o755)  # the embedded server runs as `postgres` when we are root
    out = data / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DD_", "AWS_", "PG"))}
    env["DSQLTRACE_DATA_DIR"] = str(data)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsqltrace.cli",
            "demo",
            "--users",
            "4",
            "--duration",
            "4",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Seed (Rust" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr  # every piece stopped cleanly
    return out


def test_report_has_every_span_the_functions_emit(demo_run: Path) -> None:
    figures = json.loads((demo_run / "report.json").read_text())
    expected = [
        names.OPERATION_LAMBDA,
        names.LAMBDA_INIT,
        names.DSQL_TOKEN_GENERATE,
        names.DSQL_CONNECT,
        app_names.SAVE_TODO,
        app_names.QUERY_TODOS,
        "INSERT todos",
        "SELECT todos",
    ]
    for name in expected:
        row = figures["spans"][name]
        assert row["count"] > 0, name
        assert 0 < row["p50"] <= row["p95"] <= row["p99"] <= row["max"], name
    assert figures["routes"]["POST /todos"]["count"] > 0
    assert figures["routes"]["GET /todos"]["count"] > 0


def test_cold_starts_equal_environments_and_no_span_is_late_or_lost(demo_run: Path) -> None:
    totals = json.loads((demo_run / "report.json").read_text())["totals"]
    assert totals["cold_starts"] == totals["environments_created"] > 0
    assert totals["cold_invocations_emulator"] == totals["environments_created"]
    assert totals["requests"] > 0 and totals["errors"] == 0
    assert totals["spans_late"] == 0
    assert totals["spans_lost"] == 0
    # Every invocation's root span arrived, despite the freezes.
    invocations = [
        json.loads(line) for line in (demo_run / "invocations.jsonl").read_text().splitlines()
    ]
    answered = [
        r for r in invocations if r["record"] == "invocation" and r["outcome"] == "response"
    ]
    assert figures_roots(demo_run) == len(answered)


def figures_roots(run: Path) -> int:
    figures = json.loads((run / "report.json").read_text())
    return figures["spans"][names.OPERATION_LAMBDA]["count"]


def test_html_report_is_self_contained(demo_run: Path) -> None:
    page = (demo_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "Where the time goes" in page


def test_report_explains_the_callers_latency_and_the_bill(demo_run: Path) -> None:
    figures = json.loads((demo_run / "report.json").read_text())
    breakdown = figures["caller_breakdown"]
    totals = figures["totals"]
    assert breakdown["requests"] == totals["requests"]  # every request joined by its id
    parts = breakdown["parts"]
    assert set(parts) == {
        "waiting for an environment",
        "new environment (process and init)",
        "handler (the runtime's work)",
        "front and client (HTTP, the load generator)",
    }
    assert all(p["count"] == breakdown["requests"] for p in parts.values())
    # Delivery after the response: billed, and seen by the caller in none of the parts.
    assert breakdown["after_response"]["count"] == breakdown["requests"]
    assert breakdown["after_response"]["p50"] > 0
    for function in ("todo-insert", "todo-select"):
        report = figures["lambda_report"][function]
        billed, duration = report["Billed Duration"], report["Duration"]
        assert billed["count"] > 0 and billed["p50"] >= duration["p50"]
        assert report["Init Duration (cold)"]["count"] > 0
        assert report["Max Memory Used (MB)"]["p50"] > 0  # the cgroup's (root on Linux here)
    page = (demo_run / "report.html").read_text()
    assert "The caller's latency, explained" in page and "Lambda REPORT" in page
