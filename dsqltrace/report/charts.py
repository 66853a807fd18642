"""The report's pictures, as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

from dsqltrace.report.runs import Run, Span

_COLORS = {"todo-insert": "#1f77b4", "todo-select": "#2ca02c"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _depth(span: Span, by_id: dict[str, Span]) -> int:
    depth = 0
    parent = by_id.get(span.parent_id)
    while parent is not None and depth < 20:
        depth += 1
        parent = by_id.get(parent.parent_id)
    return depth


def waterfall(trace: list[Span]) -> bytes | None:
    """A cold-start trace as a waterfall: init phases back-dated before the invocation."""
    if not trace:
        return None
    plt = _pyplot()
    by_id = {s.span_id: s for s in trace}
    origin = min(s.start_ns for s in trace)
    rows: list[tuple[str, float, float, str]] = []
    init = next((s for s in trace if s.name == "aws.lambda.init"), None)
    phases = [s for s in trace if s.attributes.get("aws.lambda.init_phase")]
    for span in trace:
        label = "  " * _depth(span, by_id) + span.name
        color = (
            "#d62728"
            if span.error
            else ("#ff7f0e" if span in phases or span is init else "#1f77b4")
        )
        rows.append((label, (span.start_ns - origin) / 1e6, span.duration_ms, color))
        if span is init:
            first = min((p.start_ns for p in phases), default=init.end_ns)
            rows.append(("    imports & runtime start", 0.0, (first - origin) / 1e6, "#c7c7c7"))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    for i, (_label, start, width, color) in enumerate(rows):
        ax.barh(i, max(width, 0.05), left=start, color=color, height=0.6)
        ax.text(start + max(width, 0.05), i, f" {width:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds since the process started")
    ax.set_title("A real cold start: init phases (orange) back-dated under the first invocation")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def latency_over_time(run: Run) -> bytes | None:
    """Every invocation's latency over the run; cold starts (init + handler) are the spikes."""
    roots = [s for s in run.spans if s.is_root]
    if not roots:
        return None
    plt = _pyplot()
    init_of = {s.trace_id: s for s in run.spans if s.name == "aws.lambda.init"}
    origin = min([s.start_ns for s in roots] + [c["start_ns"] for c in run.client])
    fig, ax = plt.subplots(figsize=(9, 4))
    if run.client:
        ax.scatter(
            [(c["start_ns"] - origin) / 1e9 for c in run.client],
            [c["latency_ms"] for c in run.client],
            s=3,
            color="#bbbbbb",
            label="client-side latency",
            alpha=0.5,
        )
    for service in sorted({s.service for s in roots}):
        warm = [s for s in roots if s.service == service and not s.attributes.get("faas.coldstart")]
        ax.scatter(
            [(s.start_ns - origin) / 1e9 for s in warm],
            [s.duration_ms for s in warm],
            s=4,
            color=_COLORS.get(service),
            label=f"{service}: aws.lambda (warm)",
        )
    cold = [s for s in roots if s.attributes.get("faas.coldstart")]
    xs, ys = [], []
    for span in cold:
        init = init_of.get(span.trace_id)
        start = init.start_ns if init is not None else span.start_ns
        xs.append((start - origin) / 1e9)
        ys.append((span.end_ns - start) / 1e6)
    ax.scatter(xs, ys, s=40, marker="x", color="#d62728", label="cold start: init + handler")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("milliseconds (log)")
    ax.set_title("Latency over time")
    ax.legend(fontsize=8, markerscale=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def histograms(run: Run) -> bytes | None:
    """Warm handler latency per function."""
    per_function: dict[str, list[float]] = defaultdict(list)
    for span in run.spans:
        if span.is_root and not span.attributes.get("faas.coldstart"):
            per_function[span.service].append(span.duration_ms)
    if not per_function:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(per_function), figsize=(4.5 * len(per_function), 3.2), squeeze=False
    )
    for ax, (service, values) in zip(axes[0], sorted(per_function.items()), strict=True):
        ax.hist(values, bins=40, color=_COLORS.get(service, "#7f7f7f"))
        ax.set_title(f"{service}: warm aws.lambda", fontsize=9)
        ax.set_xlabel("ms")
        ax.grid(alpha=0.3)
    return _png(fig)
