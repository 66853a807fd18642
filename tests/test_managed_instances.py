"""Lambda Managed Instances in the emulator: one environment, concurrent invocations served
by awslambdaric 4.x's worker processes, background delivery, SIGTERM at the end."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import httpx

from dsqltrace.report.runs import read_spans
from tests.support import eventually, eventually_async
from tests.test_delivery import _collector
from tests.test_emulator import run_emulator


def _traceparent() -> tuple[str, str, str]:
    trace, parent = secrets.token_hex(16), secrets.token_hex(8)
    return trace, parent, f"00-{trace}-{parent}-01"


def _records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in rows if r.get("record") == "invocation"]


def test_concurrent_invocations_share_one_environment_and_keep_their_own_traces(
    tmp_path: Path,
) -> None:
    spans_file, records = tmp_path / "spans.jsonl", tmp_path / "records.jsonl"
    collector, endpoint = _collector(spans_file)
    contexts = [_traceparent() for _ in range(6)]
    seen: dict[str, float] = {}

    async def scenario(url: str, emulator) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await client.get(url + "/")  # the environment's cold start

            async def one(header: str) -> httpx.Response:
                response = await client.get(url + "/", headers={"traceparent": header})
                assert response.status_code == 200
                return response

            answers = await asyncio.gather(*(one(c[2]) for c in contexts[:3]))
            seen["concurrent"] = [a.headers["x-amzn-requestid"] for a in answers]
            seen["pids"] = len({a.json()["pid"] for a in answers})
            for c in contexts[3:]:
                await one(c[2])

            def delivered() -> bool:  # in the background, while the environment lives on
                spans = read_spans(spans_file) if spans_file.exists() else []
                return len([s for s in spans if s.name == "GET"]) == 7

            await eventually_async(delivered, timeout=10)
            seen["environments"] = len(emulator.functions["fn"].environments)

    try:
        run_emulator(
            "tests.apps.concurrent.handler",
            scenario,
            records=records,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
            max_concurrency=3,
        )
    finally:
        collector.terminate()
        collector.wait(10)
    assert seen["environments"] == 1
    assert seen["pids"] == 3  # three worker processes answered the three at once
    rows = _records(records)
    at_once = [r for r in rows if r["request_id"] in seen["concurrent"]]
    # Served at once, not one after the other: each started before any of them answered.
    assert max(r["delivered_ns"] for r in at_once) < min(r["response_ns"] for r in at_once)
    assert len(rows) == 7 and len({r["environment"] for r in rows}) == 1
    assert [r["cold"] for r in rows].count(True) == 1
    spans = read_spans(spans_file)
    by_id = {s.span_id: s for s in spans}
    for trace, parent, _ in contexts:
        roots = [s for s in spans if s.name == "GET" and s.trace_id == trace]
        assert len(roots) == 1 and roots[0].parent_id == parent
        work = [s for s in spans if s.name == "work" and s.trace_id == trace]
        assert len(work) == 1 and by_id[work[0].parent_id] is roots[0]


def test_sigterm_at_stop_delivers_what_the_workers_kept(tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    collector, endpoint = _collector(spans_file)

    async def scenario(url: str, emulator) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(client.get(url + "/") for _ in range(4)))
        assert not spans_file.exists() or not read_spans(spans_file)  # kept: 10 min interval

    try:
        _, log = run_emulator(
            "tests.apps.concurrent.handler",
            scenario,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "DSQLTRACE_DELIVERY": "periodic,600000",
                "SLEEP_S": "0.05",
            },
            max_concurrency=2,
        )
        roots = eventually(
            lambda: (
                len([s for s in read_spans(spans_file) if s.name == "GET"]) == 4
                if spans_file.exists()
                else False
            )
        )
    finally:
        collector.terminate()
        collector.wait(10)
    assert roots
    assert "workers exited after SIGTERM" in log
