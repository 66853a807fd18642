"""SnapStart: the emulator publishes once and restores copies by forking; the toolkit makes
each copy's ids its own, traces the restore, and the handlers never reuse init's connection.

Real awslambdaric (its SnapStart path: before-snapshot hooks, ``restore/next``,
after-restore hooks) in the emulator, real PostgreSQL, a real collector.
Python 3.11 runs the emulator here; Lambda's SnapStart needs 3.12+, and nothing
in this path depends on the interpreter's version (awslambdaric's hooks runner
is plain Python).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsqltrace.report.runs import read_spans
from tests.support import eventually
from tests.test_delivery import _collector
from tests.test_emulator import run_emulator
from tracing import names

pytestmark = pytest.mark.usefixtures("postgres")


def emulator_log(emulator: Any) -> str:
    log = getattr(emulator, "_log_stream", None)
    return log.getvalue() if log is not None else ""


def _run(
    tmp_path: Path, postgres: Any, *, env: dict[str, str], restores: int = 2, later: int = 4
) -> tuple[list[dict[str, Any]], list[Any], list[dict[str, Any]], str, dict[str, Any]]:
    """Publish, restore ``restores`` environments at once, then send ``later`` requests."""
    spans_file, records = tmp_path / "spans.jsonl", tmp_path / "records.jsonl"
    collector, endpoint = _collector(spans_file)
    seen: dict[str, Any] = {}

    async def scenario(url: str, emulator: Any) -> list[dict[str, Any]]:
        function = emulator.functions["fn"]
        await function.published()
        seen["after_publish"] = postgres.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fn'"
        )
        async with httpx.AsyncClient(timeout=30) as client:
            # At once, with no environment yet: each of them is a restore.
            first = await asyncio.gather(*(client.get(url + "/") for _ in range(restores)))
            answers = [r.json() for r in first]
            assert all("process" in a for a in answers), (answers, emulator_log(emulator))
            for _ in range(later):
                answers.append((await client.get(url + "/")).json())
        seen["environments"] = function.created
        return answers

    try:
        answers, log = run_emulator(
            "tests.apps.snapstart.handler",
            scenario,
            records=records,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "AWS_LAMBDA_FUNCTION_NAME": "fn",
                **env,
            },
            snapstart=True,
        )

        def delivered() -> list[Any] | None:
            spans = read_spans(spans_file) if spans_file.exists() else []
            return spans if len([s for s in spans if s.name == "GET"]) >= restores + later else None

        spans = eventually(delivered)
    finally:
        collector.terminate()
        collector.wait(10)
    rows = [json.loads(line) for line in records.read_text().splitlines() if line]
    return answers, spans, rows, log, seen


def _dsql_env(postgres: Any) -> dict[str, str]:
    """The handlers' DSQL path (IAM token as the password) against the test server."""
    return {
        "CLUSTER_ENDPOINT": "localhost",
        "PGPORT": str(postgres.port),
        "PGSSLROOTCERT": str(postgres.ca_file),
        "PGSSLNEGOTIATION": "postgres",
        "AWS_ACCESS_KEY_ID": "AKIDTESTTESTTESTTEST",
        "AWS_SECRET_ACCESS_KEY": "test-secret-key-for-signing-only",
    }


def _children(spans: list[Any], parent: Any) -> list[Any]:
    return [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]


def test_restored_copies_have_their_own_ids_a_restore_span_and_a_new_connection(
    tmp_path: Path, postgres: Any
) -> None:
    answers, spans, rows, log, seen = _run(tmp_path, postgres, env=_dsql_env(postgres))
    environments = seen["environments"]
    assert environments >= 2, log
    assert seen["after_publish"].strip() == "0"  # init's connection closed before the snapshot
    init_pid = answers[0]["init_pid"]
    assert init_pid not in {a["pid"] for a in answers}
    processes = {a["process"] for a in answers}
    assert len(processes) == environments
    # One connection per restored copy, opened after its restore, kept for its requests.
    assert len({a["pid"] for a in answers}) == environments
    roots = [s for s in spans if s.name == "GET"]
    assert len(roots) == 6
    assert len({s.trace_id for s in roots}) == 6
    assert len({s.span_id for s in spans}) == len(spans)
    # The snapshot's init: once, a trace of its own, marked.
    inits = [s for s in spans if s.name == names.LAMBDA_INIT]
    assert len(inits) == 1 and not inits[0].parent_id
    assert inits[0].attributes[names.INIT_TYPE] == "snap-start"
    assert [
        s.name for s in spans if s.trace_id == inits[0].trace_id and s.parent_id == inits[0].span_id
    ]
    # One restore span per restored environment, under its cold invocation.
    restores = [s for s in spans if s.name == names.LAMBDA_SNAPSTART_RESTORE]
    assert len(restores) == environments
    cold = [s for s in roots if s.attributes[names.FAAS_COLDSTART]]
    assert len(cold) == environments
    for root in cold:
        assert root.attributes[names.INIT_TYPE] == "snap-start"
        (restore,) = [s for s in restores if s.trace_id == root.trace_id]
        assert restore.parent_id == root.span_id
        hooks = _children(spans, restore)
        assert [h.name for h in hooks] == [names.LAMBDA_AFTER_RESTORE_HOOK]
        assert hooks[0].attributes[names.CODE_FUNCTION_NAME] == "Database.after_restore"
        connect = [s for s in _children(spans, hooks[0]) if s.name == names.DSQL_CONNECT]
        assert len(connect) == 1
        tokens = [
            s
            for s in _children(spans, connect[0]) + _children(spans, hooks[0])
            if s.name == names.DSQL_TOKEN_GENERATE
        ]
        assert len(tokens) == 1  # a new token, made after the restore
        assert tokens[0].start_ns >= restore.start_ns
    warm = [s for s in roots if not s.attributes[names.FAAS_COLDSTART]]
    assert len(warm) == 6 - environments
    restored = [r for r in rows if r.get("record") == "invocation" and r.get("restore_ms")]
    assert len(restored) == environments
    assert not [r for r in rows if r.get("record") == "invocation" and r.get("init_ms")]
    assert "Restore Duration:" in log
    from dsqltrace.report.figures import lambda_report

    report = lambda_report([r for r in rows if r.get("record") == "invocation"])["fn"]
    assert report["Restore Duration (SnapStart cold)"]["count"] == environments
    assert report["Init Duration (cold)"]["count"] == 0
    (published,) = [r for r in rows if r.get("record") == "snapshot"]
    assert published["init_ms"] > 0


def test_without_the_hooks_restored_copies_repeat_each_others_ids(
    tmp_path: Path, postgres: Any
) -> None:
    """The same run with the toolkit's hooks and the app's off: this is what the hooks
    prevent (and proof that the test above can fail).  Delivery is inline: a fork loses
    the extension's thread, which only the toolkit's after-restore hook starts again."""
    env = {
        **_dsql_env(postgres),
        "DSQLTRACE_SNAPSTART_HOOKS": "false",
        "APP_HOOKS": "false",
        "DSQLTRACE_DELIVERY": "inline",
    }
    answers, spans, _rows, log, seen = _run(tmp_path, postgres, env=env)
    assert seen["environments"] >= 2, log
    first = [
        s
        for s in spans
        if s.name == "GET"
        and s.attributes[names.FAAS_COLDSTART] is False
        and names.INIT_TYPE in s.attributes
    ]
    assert len(first) == seen["environments"]
    # Both copies started from the same random state: their first requests share a trace id.
    assert len({s.trace_id for s in first}) == 1
    assert len({s.span_id for s in first}) == 1
    assert not [s for s in spans if s.name == names.LAMBDA_SNAPSTART_RESTORE]
    # init's connection was in the snapshot and is dead in each copy: the handlers
    # reconnected on the first request (never a query on init's backend).
    init_pid = answers[0]["init_pid"]
    assert init_pid not in {a["pid"] for a in answers}
    assert seen["after_publish"].strip() == "1"  # still open in the template
    reconnects = [s for s in spans if s.attributes.get(names.DSQL_RECONNECT)]
    assert len(reconnects) >= seen["environments"]


# --- in-process: the hooks as awslambdaric runs them, an in-memory exporter -------------


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    """snapshot_restore_py's registries, empty for the test."""
    import snapshot_restore_py

    before: list[Any] = []
    after: list[Any] = []
    monkeypatch.setattr(snapshot_restore_py, "_before_snapshot_registry", before)
    monkeypatch.setattr(snapshot_restore_py, "_after_restore_registry", after)
    return before, after


def _run_before_snapshot(before: list[Any]) -> None:
    from awslambdaric import lambda_runtime_hooks_runner

    lambda_runtime_hooks_runner.run_before_snapshot()
    assert not before  # the runner pops them


def _run_after_restore() -> None:
    from awslambdaric import lambda_runtime_hooks_runner

    lambda_runtime_hooks_runner.run_after_restore()


def _invoke() -> None:
    from tests.lambda_events import LambdaContext, http_event
    from tracing import traced_handler

    @traced_handler
    def handler(event: Any, context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": "{}"}

    handler(http_event("GET", "/todos"), LambdaContext())


def test_without_snapstart_nothing_is_registered(
    registries: tuple[list[Any], list[Any]], sink: Any
) -> None:
    from tracing import snapstart

    def hook() -> None:
        pass

    assert snapstart.on_snapshot(hook) is hook and snapstart.on_restore(hook) is hook
    assert registries == ([], [])
    _invoke()
    assert sorted(s.name for s in sink.spans) == ["GET", names.LAMBDA_INIT]


def test_hooks_deliver_init_once_then_trace_the_restore_with_fresh_ids(
    registries: tuple[list[Any], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from tracing import snapstart, traced
    from tracing.testing import capture_spans

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    before, after = registries
    sink = capture_spans()
    with traced(names.DSQL_CONNECT):
        pass
    reconnected: list[bool] = []

    def reconnect() -> None:
        with traced(names.DSQL_CONNECT):
            reconnected.append(True)

    snapstart.on_restore(reconnect)  # registered after the toolkit's, run after it
    snapstart.on_snapshot(lambda: None)
    # ours runs last before the snapshot and first after restore, whatever the order
    assert len(before) == 2 and len(after) == 2
    _run_before_snapshot(before)
    (init,) = [s for s in sink.spans if s.name == names.LAMBDA_INIT]
    assert init.parent is None and init.attributes[names.INIT_TYPE] == "snap-start"
    assert [s.name for s in sink.spans] == [names.DSQL_CONNECT, names.LAMBDA_INIT]
    sink.clear()
    from tracing import tracer

    snapshot_state = random.getstate(), tracer._ids.getstate()
    copies = []
    for _ in range(2):  # two copies of one snapshot: same memory, id generators included
        random.setstate(snapshot_state[0])
        tracer._ids.setstate(snapshot_state[1])
        # The registry as the snapshot holds it (a restore starts from the same memory).
        after_copy = list(after)
        monkeypatch.setattr("snapshot_restore_py._after_restore_registry", after_copy)
        from tracing import coldstart

        coldstart._state.invoked = True  # the copy's init is over; its record is the restore's
        _run_after_restore()
        _invoke()
        copies.append(list(sink.spans))
        sink.clear()
    assert reconnected == [True, True]
    ids = [{s.context.trace_id for s in spans} for spans in copies]
    assert ids[0].isdisjoint(ids[1])
    for spans in copies:
        by_name = {s.name: s for s in spans}
        root = by_name["GET"]
        assert root.attributes[names.FAAS_COLDSTART] is True
        assert root.attributes[names.INIT_TYPE] == "snap-start"
        restore = by_name[names.LAMBDA_SNAPSTART_RESTORE]
        assert restore.parent.span_id == root.context.span_id
        hook = by_name[names.LAMBDA_AFTER_RESTORE_HOOK]
        assert hook.parent.span_id == restore.context.span_id
        assert hook.attributes[names.CODE_FUNCTION_NAME].endswith("reconnect")
        assert by_name[names.DSQL_CONNECT].parent.span_id == hook.context.span_id
        assert names.LAMBDA_INIT not in by_name


def test_a_failing_delivery_never_fails_the_snapshot(
    registries: tuple[list[Any], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracing.testing import capture_spans

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    from tracing.testing import delivery

    sink = capture_spans()
    sink.fail = True
    _run_before_snapshot(registries[0])
    assert delivery().backoff.paused()
    assert delivery().pending() == 0  # no copy will send the snapshot's init
    assert delivery().stats.dropped == 1
    sink.fail = False
    _run_after_restore()
    assert not delivery().backoff.paused()  # the snapshot's pause does not hold the copy
    _invoke()
    names_seen = [s.name for s in sink.spans]
    assert names_seen.count(names.LAMBDA_INIT) == 0
    assert sorted(names_seen) == ["GET", names.LAMBDA_SNAPSTART_RESTORE]


def test_shutdown_removes_the_hooks(
    registries: tuple[list[Any], list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracing import shutdown_tracing
    from tracing.testing import capture_spans

    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")
    capture_spans()
    assert len(registries[0]) == 1 and len(registries[1]) == 1
    shutdown_tracing()
    assert registries == ([], [])


def test_a_retired_restored_copy_delivers_at_sigterm_and_the_snapshot_lives_on(
    tmp_path: Path,
) -> None:
    """Periodic delivery keeps the spans; idle retirement sends SIGTERM to the copy.  The
    toolkit's SIGTERM delivery was installed again in the copy after its restore (a fork
    shares the snapshot's wakeup pipe), so the copy delivers and the snapshot's process,
    untouched, restores the next cold start."""
    from tests.support import eventually_async
    from tests.test_emulator import get

    spans_file = tmp_path / "spans.jsonl"
    collector, endpoint = _collector(spans_file)
    seen: dict[str, Any] = {}

    async def scenario(url: str, emulator: Any) -> None:
        function = emulator.functions["fn"]
        for _ in range(5):
            assert (await get(url)).status_code == 200
        await eventually_async(lambda: not function.environments, timeout=10)

        def roots() -> int:
            spans = read_spans(spans_file) if spans_file.exists() else []
            return len([s for s in spans if s.is_root and s.name == "GET"])

        await eventually_async(lambda: roots() >= 5, timeout=5)
        seen["roots_at_retirement"] = roots()
        assert (await get(url)).status_code == 200  # a new restore of the same snapshot
        seen["created"] = function.created

    try:
        _, log = run_emulator(
            "tests.apps.extended.handler",
            scenario,
            idle_timeout_s=1.0,
            snapstart=True,
            env={
                "EXTENDED_APP": "traced",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "DSQLTRACE_DELIVERY": "periodic,600000",
            },
        )
    finally:
        collector.terminate()
        collector.wait(10)
    assert seen["roots_at_retirement"] == 5, log  # none before SIGTERM (600 s), none lost
    assert seen["created"] == 2
    assert "exited after SIGTERM" in log  # within the 500 ms grace


def test_a_snapshot_whose_process_died_fails_the_cold_start_cleanly(tmp_path: Path) -> None:
    """The snapshot's process gone: a cold start answers 502 (an init error, as Lambda's
    failed restore does) and leaves no half-made environment behind."""
    from tests.test_emulator import get

    seen: dict[str, Any] = {}

    async def scenario(url: str, emulator: Any) -> None:
        function = emulator.functions["fn"]
        snapshot = await function.published()
        template = snapshot._template.process
        template.kill()
        await template.wait()
        seen["status"] = (await get(url)).status_code
        seen["environments"] = list(function.environments)

    _, log = run_emulator(
        "tests.apps.extended.handler",
        scenario,
        snapstart=True,
        env={"EXTENDED_APP": "traced", "OTEL_TRACES_EXPORTER": "none"},
    )
    assert seen["status"] == 502
    assert seen["environments"] == []
    assert "no snapshot to restore" in log
