"""Query plans: parsing PostgreSQL's real plans and DSQL's documented format, redaction,
and explains on spans (bounded, after the response, never running a write twice)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tracing import names
from tracing.plans import parse_plan

PLANS = Path(__file__).parent / "data" / "plans"


def _fixture(name: str) -> list[str]:
    return (PLANS / name).read_text().splitlines()


@pytest.fixture(scope="module")
def todos(postgres: Any) -> Any:
    """2,000 todos and fresh statistics, for plans worth reading."""
    postgres.psql("DELETE FROM todos")
    postgres.psql(
        "INSERT INTO todos (id, name, created_at) SELECT gen_random_uuid(), 'todo ' || g, "
        "now() - g * interval '1 second' FROM generate_series(1, 2000) g"
    )
    postgres.psql("ANALYZE todos")
    yield postgres
    postgres.psql("DELETE FROM todos")


def _explain(postgres: Any, options: str, sql: str, params: tuple[Any, ...]) -> list[str]:
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        rows = conn.execute(f"EXPLAIN {options} {sql}", params).fetchall()
    return [r[0] for r in rows]


# --- PostgreSQL's own plans, made on the test server ----------------------------------


def test_a_sorted_scan_reads_the_whole_table(todos: Any) -> None:
    plan = parse_plan(
        _explain(
            todos,
            "(ANALYZE, BUFFERS)",
            "SELECT id FROM todos ORDER BY updated_at DESC LIMIT %s",
            (10,),
        )
    )
    assert plan.summary == "Seq Scan todos → Sort → Limit"
    assert plan.node_types == ["Limit", "Sort", "Seq Scan"]
    assert plan.rows == 10 and plan.rows_read == 2000
    assert plan.execution_ms is not None and plan.planning_ms is not None
    assert plan.dpu == {} and plan.storage_lookups is None


def test_the_keyset_query_reads_one_page(todos: Any) -> None:
    from handlers.store import SELECT_NEXT_PAGE

    plan = parse_plan(
        _explain(
            todos,
            "(ANALYZE, BUFFERS)",
            SELECT_NEXT_PAGE,
            ("2100-01-01", "00000000-0000-0000-0000-000000000000", 10),
        )
    )
    assert plan.summary == "Index Scan Backward todos → Limit"
    assert plan.nodes[1].index == "todos_created_at_id"
    assert plan.rows == 10 and plan.rows_read == 10


def test_filters_count_the_rows_they_removed(todos: Any) -> None:
    plan = parse_plan(
        _explain(todos, "(ANALYZE)", "SELECT id FROM todos WHERE name = %s", ("nobody",))
    )
    assert plan.summary == "Seq Scan todos"
    assert plan.rows == 0 and plan.rows_read == 2000


# --- DSQL's format (samples after its documentation: tests/data/plans/README.md) -------


def test_dsql_full_scan_with_its_dpu_estimate() -> None:
    plan = parse_plan(_fixture("dsql-full-scan-sort.txt"))
    assert plan.summary == "Full Scan (btree-table) todos → Sort → Limit"
    assert plan.node_types == [
        "Limit",
        "Sort",
        "Full Scan (btree-table)",
        "Storage Scan",
        "B-Tree Scan",
    ]
    assert plan.rows == 10 and plan.rows_read == 100_012
    assert plan.dpu == {"compute": 0.0841, "read": 1.20317, "total": 1.28727}
    assert plan.query_identifier == "7a0b3c1d9e2f4"
    assert plan.execution_ms == 181.296


def test_dsql_index_scan_with_a_storage_lookup_per_row() -> None:
    plan = parse_plan(_fixture("dsql-index-lookup.txt"))
    assert plan.summary == "Index Scan Backward todos + Storage Lookup → Limit"
    assert plan.storage_lookups == 10
    assert plan.rows_read == 10
    assert plan.dpu["total"] == 0.02318


def test_dsql_write_dpu_and_a_missing_total_is_summed() -> None:
    lines = [line for line in _fixture("dsql-insert.txt") if "Total:" not in line]
    plan = parse_plan(lines)
    assert plan.dpu["write"] == 0.0115
    assert plan.dpu["total"] == pytest.approx(0.0031 + 0.00022 + 0.0115)


# --- redaction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "secrets"),
    [
        ("dsql-full-scan-sort.txt", ["salary review"]),
        ("dsql-index-lookup.txt", ["6f1c2a9e", "2026-11-30 08:00"]),
        ("dsql-insert.txt", ["0b7d2f64", "account 4417", "call the bank"]),
    ],
)
def test_plan_text_never_keeps_a_constant(fixture: str, secrets: list[str]) -> None:
    text = parse_plan(_fixture(fixture)).text
    for secret in secrets:
        assert secret not in text
    assert "?" in text
    assert "Statement DPU Estimate:" in text  # the figures stay
    assert "(actual" in text and "Execution Time:" in text


def test_real_plans_keep_figures_and_lose_the_statements_values(todos: Any) -> None:
    secret_id = str(uuid.uuid4())
    lines = _explain(
        todos,
        "(VERBOSE)",
        "INSERT INTO todos (id, name) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
        (secret_id, "pin 7391 for the door"),
    )
    assert any(secret_id in line for line in lines)  # PostgreSQL prints them
    text = parse_plan(lines).text
    assert secret_id not in text and "7391" not in text and "door" not in text
    filtered = _explain(
        todos, "(ANALYZE)", "SELECT id FROM todos WHERE name = %s", ("my secret todo",)
    )
    text = parse_plan(filtered).text
    assert "secret" not in text
    assert "Rows Removed by Filter: 2000" in text


# --- explains on spans -----------------------------------------------------------------


@pytest.fixture
def explaining(dsql_env: Any) -> Any:
    """Tracing with every statement explained (``slow,0``), delivering to memory."""
    from tracing import TracingConfig
    from tracing.testing import capture_spans

    sink = capture_spans(TracingConfig(service_name="test", explain="slow,0"))
    yield sink
    from tests import functions

    functions.close_all()


def _load(name: str) -> Any:
    from tests import functions

    return functions.load(name)


def test_a_read_is_explained_in_its_trace_linked_to_its_query(explaining: Any) -> None:
    from tests.functions import call

    select = _load("handlers.select")
    assert call(select, "GET", "/todos")["statusCode"] == 200
    spans = explaining.spans
    (query,) = [s for s in spans if s.name == "SELECT todos"]
    (explained,) = [s for s in spans if s.name == names.DSQL_EXPLAIN]
    assert explained.context.trace_id == query.context.trace_id
    assert explained.parent.span_id == query.parent.span_id  # beside the query it explains
    assert [link.context.span_id for link in explained.links] == [query.context.span_id]
    attrs = explained.attributes
    assert attrs[names.DB_QUERY_TEXT] == query.attributes[names.DB_QUERY_TEXT]
    assert attrs[names.PLAN_ANALYZED] is True
    assert attrs[names.PLAN_SUMMARY].endswith("→ Limit")
    assert "Limit" in attrs[names.PLAN_NODE_TYPES]
    assert "(actual" in attrs[names.PLAN_TEXT]  # ANALYZE, VERBOSE on a DSQL connection
    assert names.PLAN_ROWS in attrs and names.PLAN_EXECUTION_MS in attrs


def test_a_statement_is_explained_once_per_interval(explaining: Any) -> None:
    from tests.functions import call

    select = _load("handlers.select")
    for _ in range(3):
        assert call(select, "GET", "/todos")["statusCode"] == 200
    assert len([s for s in explaining.spans if s.name == "SELECT todos"]) == 3
    assert len([s for s in explaining.spans if s.name == names.DSQL_EXPLAIN]) == 1


def test_no_explain_close_to_the_deadline(explaining: Any) -> None:
    import time

    from tests.lambda_events import LambdaContext, http_event

    select = _load("handlers.select")
    soon = LambdaContext(deadline_ms=int(time.time() * 1000) + 800)
    select.handler(http_event("GET", "/todos"), soon)
    spans = explaining.spans
    assert [s for s in spans if s.name == "SELECT todos"]
    assert not [s for s in spans if s.name == names.DSQL_EXPLAIN]


def test_a_write_is_planned_never_run_twice(dsql_env: Any, postgres: Any) -> None:
    from tests.lambda_events import LambdaContext, http_event
    from tracing import TracingConfig, traced_handler
    from tracing.db import TracedConnection
    from tracing.testing import capture_spans

    sink = capture_spans(TracingConfig(service_name="test", explain="slow,0"))
    todo = str(uuid.uuid4())
    postgres.psql(f"INSERT INTO todos (id, name) VALUES ('{todo}', 'a')")
    conn = TracedConnection.connect(postgres.url(), autocommit=True)

    @traced_handler
    def handler(event: Any, context: Any) -> dict[str, Any]:
        conn.execute("UPDATE todos SET name = name || 'x' WHERE id = %s", (todo,))
        conn.execute("DELETE FROM todos WHERE id = %s AND name = 'never'", (todo,))
        return {"statusCode": 200, "body": "{}"}

    try:
        handler(http_event("POST", "/todos"), LambdaContext())
    finally:
        conn.close()
    assert postgres.psql(f"SELECT name FROM todos WHERE id = '{todo}'").strip() == "ax"
    explained = [s for s in sink.spans if s.name == names.DB_EXPLAIN]
    assert len(explained) == 2
    for span in explained:
        assert span.attributes[names.PLAN_ANALYZED] is False
        assert "(actual" not in span.attributes[names.PLAN_TEXT]
    assert {s.attributes[names.DB_QUERY_TEXT].split()[0] for s in explained} == {
        "UPDATE",
        "DELETE",
    }


def test_in_lambda_the_explain_runs_after_the_response(tmp_path: Path, postgres: Any) -> None:
    """The real select function in the emulator (after-response delivery): the explain
    starts once the invocation's span has ended, on the extension's thread."""
    from dsqltrace.report.runs import read_spans
    from tests.support import eventually
    from tests.test_delivery import _collector
    from tests.test_emulator import get, run_emulator
    from tests.test_snapstart import _dsql_env

    spans_file = tmp_path / "spans.jsonl"
    collector, endpoint = _collector(spans_file)

    async def scenario(url: str, emulator: Any) -> None:
        for _ in range(2):
            assert (await get(url, "/todos")).status_code == 200

    try:
        run_emulator(
            "handlers.select.handler",
            scenario,
            env={
                **_dsql_env(postgres),
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "DSQLTRACE_EXPLAIN": "slow,0",
            },
        )
        spans = eventually(
            lambda: (
                [s for s in read_spans(spans_file) if s.name == names.DSQL_EXPLAIN]
                and read_spans(spans_file)
                if spans_file.exists()
                else None
            )
        )
    finally:
        collector.terminate()
        collector.wait(10)
    (explained,) = [s for s in spans if s.name == names.DSQL_EXPLAIN]
    (root,) = [s for s in spans if s.trace_id == explained.trace_id and s.is_root]
    assert explained.start_ns >= root.end_ns
    assert explained.attributes[names.PLAN_ANALYZED] is True


def test_dsqltrace_plans_answers_the_seeds_question(tmp_path: Path) -> None:
    """``dsqltrace plans`` end to end (a smaller table): the report's Plans section puts each
    statement's plan beside its p95 and says which one grows with the table."""
    import argparse
    import json
    import shutil
    import tempfile

    from dsqltrace import plans

    data = Path(tempfile.mkdtemp(prefix="dsqltrace-test-plans-"))
    data.chmod(0o755)  # as root the server runs as `postgres`, which must enter it
    out = tmp_path / "out"
    try:
        code = plans.run(argparse.Namespace(rows=5000, rounds=4, data=data / "pg", out=out))
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert code == 0
    figures = json.loads((out / "report.json").read_text())
    rows = {r["span"]: r for r in figures["plans"]}
    assert set(rows) == set(plans.statements())
    sorted_scan = rows["top 10 by updated_at (no index)"]
    assert sorted_scan["summary"] == "Seq Scan todos → Sort → Limit"
    assert sorted_scan["rows_read"] == 5000 and sorted_scan["count"] == 4
    ours = rows["Todo API: first page (keyset, index)"]
    assert ours["summary"] == "Index Scan Backward todos → Limit" and ours["rows_read"] == 10
    verdicts = "\n".join(figures["plan_verdicts"])
    assert "top 10 by updated_at (no index) (Seq Scan todos → Sort → Limit) reads 5,000" in verdicts
    assert "grows with the table" in verdicts and "size does not matter" in verdicts
    assert "whichever rows storage gives first" in verdicts  # the seed's, as written
    assert "<h2>Plans</h2>" in (out / "report.html").read_text()


def test_later_runs_carry_the_statements_dpu_estimate(
    explaining: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On DSQL, the explain's DPU total goes on later query spans of the same statement (the
    test server is PostgreSQL: its plan is read as DSQL's documented sample instead)."""
    import tracing.plans
    from tests.functions import call

    sample = parse_plan(_fixture("dsql-index-lookup.txt"))
    monkeypatch.setattr(tracing.plans, "parse_plan", lambda lines: sample)
    select = _load("handlers.select")
    for _ in range(2):
        assert call(select, "GET", "/todos")["statusCode"] == 200
    queries = [s for s in explaining.spans if s.name == "SELECT todos"]
    assert names.DPU_ESTIMATE not in queries[0].attributes  # not explained yet
    assert queries[1].attributes[names.DPU_ESTIMATE] == 0.02318
    (explained,) = [s for s in explaining.spans if s.name == names.DSQL_EXPLAIN]
    assert explained.attributes[names.DPU_TOTAL] == 0.02318
    assert explained.attributes[names.PLAN_STORAGE_LOOKUPS] == 10


def test_a_select_that_writes_is_not_run_twice(dsql_env: Any, postgres: Any) -> None:
    """A read is analysed in a read-only transaction: a SELECT calling a volatile function
    (``nextval``) fails there, and the sequence moves once, not twice."""
    from tests.lambda_events import LambdaContext, http_event
    from tracing import TracingConfig, traced_handler
    from tracing.db import TracedConnection
    from tracing.testing import capture_spans

    sink = capture_spans(TracingConfig(service_name="test", explain="slow,0"))
    postgres.psql("DROP SEQUENCE IF EXISTS explained_seq; CREATE SEQUENCE explained_seq")
    conn = TracedConnection.connect(postgres.url(), autocommit=True)

    @traced_handler
    def handler(event: Any, context: Any) -> dict[str, Any]:
        conn.execute("SELECT nextval('explained_seq')")
        return {"statusCode": 200, "body": "{}"}

    try:
        handler(http_event("GET", "/todos"), LambdaContext())
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.read_only is None  # the handler's connection as it was (server default)
    finally:
        conn.close()
    assert postgres.psql("SELECT last_value FROM explained_seq").strip() == "1"
    (explained,) = [s for s in sink.spans if s.name == names.DB_EXPLAIN]
    assert explained.attributes[names.DB_RESPONSE_STATUS_CODE] == "25006"  # read-only txn
    assert not explained.status.is_ok


def test_an_explain_that_would_outlast_its_bound_is_stopped_by_the_server(
    postgres: Any,
) -> None:
    """The explain's own ``statement_timeout``: the server cancels it (57014), the
    connection is left idle and usable, its settings as they were."""
    from tracing.explain import explain_lines

    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            explain_lines(conn, "EXPLAIN (ANALYZE) SELECT pg_sleep(30)", None, timeout_s=0.2)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
        assert conn.execute("SELECT 1").fetchone()[0] == 1
