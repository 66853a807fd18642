"""Query plans as ``EXPLAIN`` prints them (PostgreSQL, Aurora DSQL): parsed, summarised, redacted.

Both engines print the same text format: one node per line (``->`` and
indentation give the tree; ``(cost=...)`` and, with ANALYZE, ``(actual ...
rows=N loops=M)``), detail lines under each node (``Filter: ...``,
``Index Cond: ...``), and a footer (``Planning Time``, ``Execution Time``).
Aurora DSQL adds its own nodes (``Full Scan (btree-table)``, ``Storage Scan``,
``B-Tree Scan``, ``Storage Lookup``, ``B-Tree Lookup``), ``Query Identifier``
and, with ``ANALYZE, VERBOSE``, a ``Statement DPU Estimate`` block (Compute,
Read, Write, MultiRegionWrite, Total): what DSQL bills for the statement.

Plans print the constants of a statement (filters, index conditions, the
values an INSERT writes): :func:`redact_plan` replaces every literal in every
detail line but a short list of known numeric ones with ``?``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tracing.db import redact_sql

__all__ = ["MAX_PLAN_CHARS", "Plan", "PlanNode", "parse_plan", "redact_plan"]

#: The most plan text a span carries.
MAX_PLAN_CHARS = 8192

_NODE = re.compile(
    r"^(?P<indent>\s*)(?:->\s+)?(?P<label>\S.*?)\s+\(cost=[^)]*\)"
    r"(?:\s+\(actual(?:\s+time=[\d.]+\.\.[\d.]+)?\s+rows=(?P<rows>[\d.]+)\s+loops=(?P<loops>\d+)\))?"
    r"(?:\s+\(never executed\))?\s*$"
)
_LABEL = re.compile(r"^(?P<type>.+?)(?: using (?P<index>\S+))?(?: on (?P<relation>\S+)(?: \S+)?)?$")
_DETAIL = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z][A-Za-z /-]*?):(?P<value>.*)$")
_DPU = re.compile(
    r"^\s*(?P<part>Compute|Read|Write|MultiRegionWrite|Total):\s*(?P<v>[\d.eE+-]+)\s*DPU"
)
_REMOVED = re.compile(r"^\s*Rows Removed by (?:Filter|Index Recheck): (?P<n>\d+)")
_FOOTER_MS = re.compile(r"^(?P<key>Planning Time|Execution Time): (?P<ms>[\d.]+) ms")
#: Detail lines whose values are figures, never the statement's constants.
_NUMERIC_DETAILS = frozenset(
    {
        "Rows Removed by Filter",
        "Rows Removed by Index Recheck",
        "Rows Removed by Join Filter",
        "Buffers",
        "Planning",
        "Planning Time",
        "Execution Time",
        "Sort Method",
        "Heap Fetches",
        "Workers Planned",
        "Workers Launched",
        "Batches",
        "Buckets",
        "Memory Usage",
        "Peak Memory Usage",
        "Query Identifier",
        "Statement DPU Estimate",
        "Compute",
        "Read",
        "Write",
        "MultiRegionWrite",
        "Total",
        "Conflict Resolution",
        "Conflict Arbiter Indexes",
        "Tuples Inserted",
        "Conflicting Tuples",
        "Full-sort Groups",
        "Pre-sorted Groups",
        "I/O Timings",
        "WAL",
    }
)
#: DSQL's nodes below a scan: parts of the scan, not steps of the plan.
_DSQL_SCAN_PARTS = frozenset({"Storage Scan", "B-Tree Scan", "B-Tree Lookup"})


@dataclass(frozen=True)
class PlanNode:
    """One node: its type, the relation and index it reads, and (ANALYZE) its rows."""

    depth: int
    type: str
    relation: str | None = None
    index: str | None = None
    rows: float | None = None
    loops: int = 1
    removed: int = 0

    @property
    def is_scan(self) -> bool:
        """A node that reads a relation (a scan, not DSQL's parts of one)."""
        return "Scan" in self.type and not self.part

    @property
    def part(self) -> bool:
        """One of DSQL's sub-nodes of a scan (``Storage Scan``, ``B-Tree Scan``...)."""
        return self.type in _DSQL_SCAN_PARTS

    def describe(self) -> str:
        return f"{self.type} {self.relation}" if self.relation else self.type


@dataclass(frozen=True)
class Plan:
    """What a plan says: its nodes (root first), DPU estimate, timings, redacted text."""

    nodes: tuple[PlanNode, ...]
    text: str
    dpu: dict[str, float] = field(default_factory=dict)
    planning_ms: float | None = None
    execution_ms: float | None = None
    query_identifier: str | None = None

    @property
    def summary(self) -> str:
        """The plan's steps, first to last: ``"Seq Scan todos → Sort → Limit"``."""
        steps: list[str] = []
        lookup = False
        for node in reversed(self.nodes):
            if node.part:
                continue
            if node.type == "Storage Lookup":  # DSQL: part of the index scan above it
                lookup = True
                continue
            steps.append(node.describe() + (" + Storage Lookup" if lookup else ""))
            lookup = False
        return " → ".join(steps) if steps else "(no plan nodes)"

    @property
    def node_types(self) -> list[str]:
        """The node types, root first, each once."""
        return list(dict.fromkeys(n.type for n in self.nodes))

    @property
    def rows(self) -> float | None:
        """Rows the statement produced (the root's, with ANALYZE)."""
        return self.nodes[0].rows if self.nodes else None

    @property
    def rows_read(self) -> int | None:
        """Rows the scans read (returned or removed by a filter), with ANALYZE."""
        scans = [n for n in self.nodes if n.is_scan and n.rows is not None]
        if not scans:
            return None
        return int(sum((n.rows or 0) * n.loops + n.removed for n in scans))

    @property
    def storage_lookups(self) -> int | None:
        """DSQL: storage round trips made one row at a time (``Storage Lookup`` nodes)."""
        lookups = [n for n in self.nodes if n.type == "Storage Lookup"]
        if not lookups:
            return None
        return int(sum((n.rows or 0) * n.loops for n in lookups))


def redact_plan(lines: list[str]) -> str:
    """The plan's text with every constant replaced by ``?`` (see the module docstring)."""
    out = []
    for line in lines:
        if _NODE.match(line) or not line.strip():
            out.append(line)
            continue
        detail = _DETAIL.match(line)
        if detail is None:
            out.append(redact_sql(line) if line.strip() else line)
            continue
        key = detail.group("key").strip()
        if key in _NUMERIC_DETAILS:
            out.append(line)
        else:
            out.append(f"{detail.group('indent')}{key}: {redact_sql(detail.group('value'))}")
    text = "\n".join(out)
    return text if len(text) <= MAX_PLAN_CHARS else text[: MAX_PLAN_CHARS - 1] + "…"


def parse_plan(lines: list[str]) -> Plan:
    """Parse ``EXPLAIN`` output, one string per line (the rows of its one column)."""
    nodes: list[PlanNode] = []
    dpu: dict[str, float] = {}
    timings: dict[str, float] = {}
    identifier = None
    in_dpu = False
    for line in lines:
        node = _NODE.match(line)
        if node is not None:
            in_dpu = False
            label = _LABEL.match(node.group("label").strip())
            assert label is not None  # ".+?" matches any label
            rows = node.group("rows")
            nodes.append(
                PlanNode(
                    depth=len(node.group("indent")),
                    type=label.group("type"),
                    relation=_bare(label.group("relation")),
                    index=label.group("index"),
                    rows=float(rows) if rows is not None else None,
                    loops=int(node.group("loops") or 1),
                )
            )
            continue
        removed = _REMOVED.match(line)
        if removed is not None and nodes:
            last = nodes[-1]
            nodes[-1] = PlanNode(
                last.depth,
                last.type,
                last.relation,
                last.index,
                last.rows,
                last.loops,
                last.removed + int(removed.group("n")) * last.loops,
            )
            continue
        stripped = line.strip()
        if stripped.startswith("Statement DPU Estimate"):
            in_dpu = True
            continue
        part = _DPU.match(line) if in_dpu else None
        if part is not None:
            dpu[part.group("part").lower()] = float(part.group("v"))
            continue
        footer = _FOOTER_MS.match(stripped)
        if footer is not None:
            timings[footer.group("key")] = float(footer.group("ms"))
        elif stripped.startswith("Query Identifier:"):
            identifier = stripped.partition(":")[2].strip() or None
    if dpu and "total" not in dpu:
        dpu["total"] = sum(dpu.values())
    return Plan(
        nodes=tuple(nodes),
        text=redact_plan(lines),
        dpu=dpu,
        planning_ms=timings.get("Planning Time"),
        execution_ms=timings.get("Execution Time"),
        query_identifier=identifier,
    )


def _bare(relation: str | None) -> str | None:
    """``public.todos`` → ``todos`` (the collection name the query spans use)."""
    if relation is None:
        return None
    return relation.rsplit(".", 1)[-1].strip('"')
