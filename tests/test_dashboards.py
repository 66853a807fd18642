"""Dashboard JSON: offline validation with datadog-api-client, and push against a stand-in API."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from dsqltrace import span_metrics
from dsqltrace.dashboards import DASHBOARDS, push, validate, validate_text
from dsqltrace.httpserver import HttpRequest, HttpResponse, bound_port, json_response, start

ORIGINAL = json.loads((DASHBOARDS / "todo-api.json").read_text())


def test_committed_dashboards_are_valid() -> None:
    assert validate() == []


def test_dashboard_covers_what_the_issue_asks() -> None:
    text = json.dumps(ORIGINAL) + span_metrics.FILE.read_text()
    for needle in (
        "p50:trace.aws.lambda",
        "p95:trace.aws.lambda",
        "p99:trace.aws.lambda",
        "trace.aws.lambda.hits",
        "trace.aws.lambda.errors",
        "aws.lambda.enhanced.invocations{cold_start:true",
        "aws.lambda.enhanced.init_duration",
        "operation_name:dsql.token.generate",
        "operation_name:dsql.connect",
        "operation_name:postgresql.query",
        "@dsql.occ.retry_count",
        "dsqltrace.dsql.explain.dpu_total",
        "dsqltrace.dsql.explain.execution_ms",
        '"type": "note"',
    ):
        assert needle in text, needle
    assert {t["name"] for t in ORIGINAL["template_variables"]} == {"env", "service", "functionname"}


def test_token_connect_query_occ_and_plan_widgets_chart_metrics_from_all_spans() -> None:
    """Not the spans data source (indexed spans only, a sample): span-based metrics."""
    charted: set[str] = set()
    for widget in ORIGINAL["widgets"]:
        definition = json.dumps(widget["definition"])
        if any(k in definition for k in ("token", "connect", "postgresql.query", "occ", "explain")):
            if "Save Todo" in definition:
                continue  # the application's own spans
            assert '"data_source": "spans"' not in definition, widget["definition"]["title"]
            charted |= set(re.findall(r"dsqltrace\.[a-z0-9_.]+", definition))
    assert charted == span_metrics.defined()


METRIC_CASES = [
    (lambda m: m[0]["data"].update(id="todo.latency"), "does not start with 'dsqltrace.'"),
    (lambda m: m.append(m[0]), "is defined twice"),
    (
        lambda m: m[1]["data"]["attributes"]["filter"].update(query="operation_name:dsql.conect"),
        "'dsql.conect' is not one the toolkit emits",
    ),
    (
        lambda m: m[5]["data"]["attributes"]["filter"].update(
            query="operation_name:(dsql.explain OR postgres.explain)"
        ),
        "'postgres.explain' is not one the toolkit emits",
    ),
    (
        lambda m: m[3]["data"]["attributes"]["compute"].update(path="@dsql.occ.retries"),
        "@dsql.occ.retries is not one the toolkit sets",
    ),
    (
        lambda m: m[0]["data"]["attributes"]["compute"].update(aggregation_type="histogram"),
        "span_metrics[0]",
    ),
]


@pytest.mark.parametrize(("change", "message"), METRIC_CASES)
def test_span_metric_mistakes_are_reported(tmp_path: Path, change, message) -> None:
    data = json.loads(span_metrics.FILE.read_text())
    assert span_metrics.validate(span_metrics.FILE) == []
    change(data["span_metrics"])
    bad = tmp_path / "span-metrics.json"
    bad.write_text(json.dumps(data))
    errors = span_metrics.validate(bad)
    assert any(message in e for e in errors), errors


def mutate(change) -> str:
    data = copy.deepcopy(ORIGINAL)
    change(data)
    return json.dumps(data)


def _set(path: list[Any], value: Any):
    def change(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _rename(path: list[Any], old: str, new: str):
    def change(data: dict) -> None:
        target = data
        for key in path:
            target = target[key]
        target[new] = target.pop(old)

    return change


CASES = [
    (
        _set(["widgets", 1, "definition", "type"], "timeserie"),
        "$.widgets[1].definition",
        "not a valid",
    ),
    (
        _set(["widgets", 1, "definition", "requests", 0, "display_type"], "lines"),
        "$.widgets[1].definition.requests[0].display_type",
        "invalid value",
    ),
    (
        _rename(["widgets", 1, "definition"], "title", "titel"),
        "$.widgets[1].definition.titel",
        "unknown key",
    ),
    (
        _rename(["widgets", 1, "definition", "requests", 0, "queries", 0], "query", "querry"),
        "$.widgets[1].definition.requests[0].queries[0]",
        "missing required 'query'",
    ),
    (_set(["widgets", 1, "definition", "show_legend"], "yes"), "$.widgets[1]", ""),
    (
        _set(
            ["widgets", 1, "definition", "requests", 0, "queries", 0, "query"],
            "p50:trace.aws.lambda{$region}",
        ),
        "$.widgets[1]",
        "template variable $region",
    ),
    (
        _set(
            ["widgets", 10, "definition", "requests", 0, "queries", 1, "search", "query"],
            "operation_name:dsql.conect",
        ),
        "$.widgets[10]",
        "'dsql.conect' is not one the toolkit emits",
    ),
    (
        _set(
            ["widgets", 6, "definition", "requests", 0, "queries", 1, "query"],
            "p95:dsqltrace.dsql.conect.duration{$env}",
        ),
        "$.widgets[6]",
        "'dsqltrace.dsql.conect.duration' is not defined",
    ),
    (
        _set(
            ["widgets", 1, "definition", "requests", 0, "queries", 0, "query"],
            "p50:trace.aws.lamda{$env}",
        ),
        "$.widgets[1]",
        "'aws.lamda', an operation",
    ),
    (_set(["layout_type"], "free"), "$.widgets[0]", "free layout needs a layout"),
    (
        _set(["widgets", 2, "layout"], {"x": 8, "y": 0, "width": 6, "height": 2}),
        "$.widgets[2]",
        "remove layout",
    ),
]


@pytest.mark.parametrize(("change", "path", "message"), CASES)
def test_each_kind_of_mistake_is_reported_with_its_path(change, path, message) -> None:
    errors = validate_text(mutate(change), "todo-api.json")
    assert errors, "the mistake went unnoticed"
    assert any(path in e and message in e for e in errors), errors
    assert all(e.startswith("todo-api.json: ") for e in errors)


def test_missing_title_is_reported() -> None:
    errors = validate_text(mutate(lambda d: d.pop("title")), "x.json")
    assert errors and "title" in errors[0]


class FakeDatadog:
    """Enough of the dashboards API (v1) to test create-or-update."""

    def __init__(self) -> None:
        self.dashboards: dict[str, dict] = {}
        self.metrics: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.keys: set[tuple[str, str]] = set()

    def handle(self, request: HttpRequest) -> HttpResponse:
        self.calls.append((request.method, request.path))
        self.keys.add(
            (request.headers.get("dd-api-key", ""), request.headers.get("dd-application-key", ""))
        )
        if request.path == "/api/v1/dashboard" and request.method == "GET":
            summary = [
                {"id": k, "title": v["title"], "description": v.get("description")}
                for k, v in self.dashboards.items()
            ]
            return json_response(200, json.dumps({"dashboards": summary}).encode())
        if request.path == "/api/v1/dashboard" and request.method == "POST":
            body = json.loads(request.body)
            new_id = f"abc-{len(self.dashboards) + 1:03d}-xyz"
            self.dashboards[new_id] = {**body, "id": new_id}
            return json_response(200, json.dumps(self.dashboards[new_id]).encode())
        if request.path == "/api/v2/apm/config/metrics" and request.method == "GET":
            data = [{"id": k, "type": "spans_metrics", **v} for k, v in self.metrics.items()]
            return json_response(200, json.dumps({"data": data}).encode())
        if request.path == "/api/v2/apm/config/metrics" and request.method == "POST":
            data = json.loads(request.body)["data"]
            if data["id"] in self.metrics:
                return json_response(409, b'{"errors": ["exists"]}')
            self.metrics[data["id"]] = {"attributes": data["attributes"]}
            return json_response(200, json.dumps({"data": data}).encode())
        if request.path.startswith("/api/v2/apm/config/metrics/") and request.method == "PATCH":
            metric_id = request.path.rsplit("/", 1)[1]
            if metric_id not in self.metrics:
                return json_response(404, b'{"errors": ["not found"]}')
            attributes = json.loads(request.body)["data"]["attributes"]
            self.metrics[metric_id]["attributes"].update(
                {k: v for k, v in attributes.items() if k != "compute"}
            )
            data = {"id": metric_id, "type": "spans_metrics", **self.metrics[metric_id]}
            return json_response(200, json.dumps({"data": data}).encode())
        if request.path.startswith("/api/v1/dashboard/") and request.method == "PUT":
            dash_id = request.path.rsplit("/", 1)[1]
            if dash_id not in self.dashboards:
                return json_response(404, b'{"errors": ["not found"]}')
            self.dashboards[dash_id] = {**json.loads(request.body), "id": dash_id}
            return json_response(200, json.dumps(self.dashboards[dash_id]).encode())
        return json_response(404, b'{"errors": ["no route"]}')


@pytest.fixture
def fake_api():
    api = FakeDatadog()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(start(api.handle, "127.0.0.1", 0))
        holder["port"] = bound_port(server)
        ready.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield api, f"http://127.0.0.1:{holder['port']}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_push_creates_then_updates_never_duplicates(fake_api) -> None:
    api, url = fake_api
    first = push(DASHBOARDS, api_url=url, api_key="k1", app_key="a1", dry_run=False)
    metrics = span_metrics.defined()
    assert len(first) == 1 + len(metrics) and first[0].startswith("created")
    assert sorted(first[1:]) == sorted(f"created span metric {m}" for m in metrics)
    second = push(DASHBOARDS, api_url=url, api_key="k1", app_key="a1", dry_run=False)
    assert second[0].startswith("updated")
    assert sorted(second[1:]) == sorted(f"updated span metric {m}" for m in metrics)
    assert set(api.metrics) == metrics  # created once each, then updated in place
    assert ("PATCH", "/api/v2/apm/config/metrics/dsqltrace.dsql.connect.duration") in api.calls
    assert len(api.dashboards) == 1
    stored = next(iter(api.dashboards.values()))
    assert stored["title"] == ORIGINAL["title"]
    assert len(stored["widgets"]) == len(ORIGINAL["widgets"])
    assert "(id: todo-api)" in stored["description"]
    assert api.keys == {("k1", "a1")}
    assert ("POST", "/api/v1/dashboard") in api.calls
    assert any(m == "PUT" for m, _ in api.calls)


def test_dry_run_changes_nothing(fake_api) -> None:
    api, url = fake_api
    lines = push(DASHBOARDS, api_url=url, api_key="k", app_key="a", dry_run=True)
    assert lines[0].startswith("would create")
    assert all(line.startswith("would") for line in lines)
    assert api.dashboards == {} and api.metrics == {}
    assert all(m == "GET" for m, _ in api.calls)


def test_cli_validate(tmp_path: Path) -> None:
    from dsqltrace.cli import main

    assert main(["dashboards", "validate"]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(mutate(_set(["widgets", 1, "definition", "type"], "timeserie")))
    assert main(["dashboards", "validate", "--dir", str(tmp_path)]) == 1
