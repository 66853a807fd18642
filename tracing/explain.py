"""Plans on spans: slow or sampled statements explained, after the response where Lambda allows.

Off by default.  With ``DSQLTRACE_EXPLAIN=slow,<ms>`` a statement that took at
least ``<ms>`` is explained; with ``ratio,<r>`` that share of statements, at
random.  The explain runs once the invocation is over: on the delivery
extension's thread after the response (after-response and periodic
delivery), else just before the handler's own delivery (inline), always
before its spans are delivered.  Its result is a ``dsql.explain`` span
(``postgresql.explain`` on a plain PostgreSQL connection, as for connect
spans) in the invocation's trace, linked to the query span it explains, with
the plan's summary, node types, rows, DSQL's storage lookups and DPU
estimate, and the plan text, every constant redacted (:mod:`tracing.plans`).
On DSQL, later runs of an explained statement carry its latest estimate as
``dsql.dpu.estimate`` on their query spans: every request then shows what its
statements cost, not only the explained ones.

Bounds:

- each distinct statement (by its redacted text) is explained at most once
  per ``DSQLTRACE_EXPLAIN_INTERVAL_S`` per environment, and at most
  :data:`MAX_PER_INVOCATION` statements per invocation;
- an explain never starts with less than :data:`MIN_REMAINING_S` (or three
  times the statement's own duration) left before the invocation's deadline,
  and runs under a ``statement_timeout`` that ends it with half of that still
  left (and after :data:`MAX_EXPLAIN_S` at most), so the server stops an explain
  that would outlast the bound;
- reads are explained with ``EXPLAIN (ANALYZE, VERBOSE)`` on DSQL (which prints
  its DPU estimate only then) and ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL:
  one more execution of the read.  Writes (and ``WITH`` statements, which may
  write) get plain ``EXPLAIN``: planned, never executed a second time.  Both run in
  a read-only transaction that is rolled back, so that a SELECT that writes after
  all (a volatile function, ``FOR UPDATE``) fails instead of writing twice.  No
  ``SAVEPOINT`` is ever needed, which suits DSQL's rules (no savepoints; the
  snapshot is taken at ``BEGIN``);
- only on a connection that is idle (no transaction open), with the
  statement's own parameters, held in memory until then and never recorded.

Environment variables
---------------------
- ``DSQLTRACE_EXPLAIN``: ``off`` (default), ``slow,<ms>`` or ``ratio,<r>``.
- ``DSQLTRACE_EXPLAIN_INTERVAL_S``: once per statement per this many seconds (600).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from tracing import names
from tracing.runtime import logger

__all__ = [
    "MAX_EXPLAIN_S",
    "MAX_PER_INVOCATION",
    "MAX_REMEMBERED",
    "MIN_REMAINING_S",
    "Policy",
    "configure",
    "consider",
    "estimate",
    "explain_lines",
    "invocation_started",
    "pending",
    "policy",
    "reset",
    "run_pending",
]

#: The most statements explained per invocation.
MAX_PER_INVOCATION = 4
#: No explain starts with less time than this left before the deadline; each keeps half
#: of it back for delivery (its ``statement_timeout`` ends it before).
MIN_REMAINING_S = 1.0
#: The longest one explain may run (its ``statement_timeout``), deadline or not.
MAX_EXPLAIN_S = 5.0
#: The most statements remembered (when each was explained, its DPU estimate).
MAX_REMEMBERED = 512
_READS = frozenset({"SELECT"})
_EXPLAINABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH"})


@dataclass(frozen=True)
class Policy:
    """Which statements are explained: ``slow`` (threshold) or ``ratio`` (sampled)."""

    kind: str
    threshold_s: float = 0.0
    ratio: float = 0.0
    interval_s: float = 600.0

    @classmethod
    def parse(cls, setting: str, interval_s: float) -> Policy | None:
        """The policy of a ``DSQLTRACE_EXPLAIN`` value (as :mod:`tracing.config` checked it)."""
        kind, _, figure = setting.partition(",")
        if kind == "slow":
            return cls("slow", threshold_s=int(figure) / 1000.0, interval_s=interval_s)
        if kind == "ratio":
            return cls("ratio", ratio=float(figure), interval_s=interval_s)
        return None

    def wants(self, duration_s: float) -> bool:
        if self.kind == "slow":
            return duration_s >= self.threshold_s
        return random.random() < self.ratio


@dataclass
class _Job:
    conn: Any
    sql: str
    params: Any
    redacted: str
    operation: str
    query_context: Any
    parent_context: Any
    duration_s: float
    dsql: bool


class _State:
    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy
        self.lock = threading.Lock()
        self.jobs: list[_Job] = []
        self.explained_at: dict[str, float] = {}
        self.deadline: float | None = None
        self.queued = 0
        #: Each explained statement's latest DPU estimate (DSQL), by its redacted text.
        self.dpu: dict[str, float] = {}


_state = _State()


def policy() -> Policy | None:
    """The policy in force, or None when explaining is off."""
    return _state.policy


def configure(setting: str, interval_s: float) -> None:
    """Set the policy (``setup_tracing`` does, from the config)."""
    global _state
    _state = _State(Policy.parse(setting, interval_s))


def reset() -> None:
    """Explaining off, nothing pending, nothing remembered (``reset_tracing``)."""
    global _state
    _state = _State()


def invocation_started(deadline: float | None) -> None:
    """A new invocation: its deadline (``time.monotonic()``), and its own allowance."""
    state = _state
    with state.lock:
        state.deadline = deadline
        state.queued = 0


def consider(cursor: Any, sql: str, params: Any, span: Any, attributes: Any) -> None:
    """After a statement succeeded: queue its explain if the policy and the bounds allow."""
    state = _state
    rule = state.policy
    if rule is None:
        return
    operation = str(attributes.get(names.DB_OPERATION_NAME, ""))
    redacted = str(attributes.get(names.DB_QUERY_TEXT, ""))
    start, end = getattr(span, "start_time", None), getattr(span, "end_time", None)
    if operation not in _EXPLAINABLE or not redacted or start is None or end is None:
        return
    duration_s = (end - start) / 1e9
    if not rule.wants(duration_s):
        return
    now = time.monotonic()
    with state.lock:
        last = state.explained_at.get(redacted)
        if last is not None and now - last < rule.interval_s:
            return
        if state.queued >= MAX_PER_INVOCATION:
            return
        if len(state.explained_at) >= MAX_REMEMBERED:  # statements made up on the fly
            state.explained_at.clear()
            state.dpu.clear()
        state.explained_at[redacted] = now
        state.queued += 1
        from opentelemetry import trace

        conn = cursor.connection
        state.jobs.append(
            _Job(
                conn=conn,
                sql=sql,
                params=params,
                redacted=redacted,
                operation=operation,
                query_context=span.get_span_context(),
                parent_context=trace.set_span_in_context(_parent_span(span)),
                duration_s=duration_s,
                dsql=getattr(conn, "_tracing_connect_span", None) == names.DSQL_CONNECT,
            )
        )


def _parent_span(span: Any) -> Any:
    from opentelemetry import trace

    parent = getattr(span, "parent", None)  # the SDK span's parent SpanContext
    return trace.NonRecordingSpan(parent) if parent is not None else trace.INVALID_SPAN


def estimate(redacted: str) -> float | None:
    """The latest DPU estimate of a statement in this environment (DSQL), or None."""
    return _state.dpu.get(redacted)


def pending() -> int:
    """How many explains wait to run."""
    return len(_state.jobs)


def run_pending(deadline: float | None = None) -> int:
    """Run the queued explains (each within the deadline's bound); how many ran."""
    state = _state
    with state.lock:
        jobs, state.jobs = state.jobs, []
        bound = deadline if deadline is not None else state.deadline
    ran = 0
    for job in jobs:
        left = MAX_EXPLAIN_S + MIN_REMAINING_S if bound is None else bound - time.monotonic()
        if left < max(MIN_REMAINING_S, 3 * job.duration_s):
            continue  # too close to the deadline: this one is dropped, not postponed
        try:
            # The server stops it in time for delivery to follow within the deadline.
            if _explain(job, min(MAX_EXPLAIN_S, left - MIN_REMAINING_S / 2)):
                ran += 1
        except Exception as exc:  # never let an explain break delivery
            logger.warning("tracing: could not explain a statement: %s", type(exc).__name__)
        finally:
            job.params = None
    return ran


def explain_lines(conn: Any, statement: str, params: Any, *, timeout_s: float) -> list[str]:
    """Run an ``EXPLAIN`` statement and return its lines, bounded by ``timeout_s``.

    It runs in a read-only transaction that is rolled back, with ``statement_timeout``
    set for it alone: a SELECT that writes after all (a volatile function, ``FOR
    UPDATE``) fails instead of writing twice, a plain ``EXPLAIN`` of a write is planned
    only, and the server cancels whatever outlasts the bound.  No SAVEPOINT: the
    connection is idle, so this is its only transaction.
    """
    import psycopg
    from psycopg.rows import tuple_row

    read_only = conn.read_only
    conn.read_only = True
    try:
        with (
            conn.transaction(force_rollback=True),
            psycopg.Cursor(conn, row_factory=tuple_row) as cursor,
        ):
            cursor.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            cursor.execute(statement, params)
            return [str(row[0]) for row in cursor.fetchall()]
    finally:
        conn.read_only = read_only


def _explain(job: _Job, timeout_s: float) -> bool:
    import psycopg
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    from tracing.plans import parse_plan
    from tracing.runtime import current

    rt = current()
    conn = job.conn
    if rt is None or conn.closed or conn.broken:
        return False
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False  # the statement's transaction is still open: never disturb it
    read = job.operation in _READS
    if read:
        options = "(ANALYZE, VERBOSE)" if job.dsql else "(ANALYZE, BUFFERS)"
    else:
        options = "(VERBOSE)" if job.dsql else ""
    name = names.DSQL_EXPLAIN if job.dsql else names.DB_EXPLAIN
    attributes: dict[str, Any] = {
        names.DB_SYSTEM_NAME: "postgresql",
        names.DB_OPERATION_NAME: "EXPLAIN",
        names.DB_QUERY_TEXT: job.redacted,
        names.DD_OPERATION_NAME: name,
        names.DD_RESOURCE_NAME: job.redacted,
        names.PLAN_ANALYZED: read,
    }
    span = rt.tracer.start_span(
        name,
        context=job.parent_context,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        links=[Link(job.query_context)],
    )
    try:
        lines = explain_lines(conn, f"EXPLAIN {options} {job.sql}", job.params, timeout_s=timeout_s)
    except psycopg.Error as exc:
        if exc.sqlstate:
            span.set_attribute(names.DB_RESPONSE_STATUS_CODE, exc.sqlstate)
        span.set_status(Status(StatusCode.ERROR, "the explain failed"))
        span.end()
        return False
    plan = parse_plan(lines)
    span.set_attribute(names.PLAN_SUMMARY, plan.summary)
    span.set_attribute(names.PLAN_NODE_TYPES, plan.node_types)
    span.set_attribute(names.PLAN_TEXT, plan.text)
    for key, value in (
        (names.PLAN_ROWS, plan.rows),
        (names.PLAN_ROWS_READ, plan.rows_read),
        (names.PLAN_STORAGE_LOOKUPS, plan.storage_lookups),
        (names.PLAN_EXECUTION_MS, plan.execution_ms),
    ):
        if value is not None:
            span.set_attribute(key, value)
    for part, value in plan.dpu.items():
        span.set_attribute(f"{names.DPU_PREFIX}{part}", value)
    span.end()
    if "total" in plan.dpu:
        with _state.lock:
            _state.dpu[job.redacted] = plan.dpu["total"]
    return True
