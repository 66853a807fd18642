"""What Datadog would receive, checked with Datadog's own test agent, from both exporters."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.agent import ROOT, TestAgent
from tests.conftest import LAMBDA_ENV

pytestmark = pytest.mark.agent


def run_app(env: dict[str, str], invocations: int = 2) -> None:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DD_", "AWS_LAMBDA"))
    }
    full_env.update(LAMBDA_ENV)
    full_env.update({"DD_SERVICE": "todo-api", "DD_ENV": "ci", "DD_VERSION": "1.2.3", **env})
    result = subprocess.run(
        [sys.executable, "-m", "tests.apps.traced_app", str(invocations)],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"statusCode": 201') == invocations


def otlp_spans(agent: TestAgent) -> list[dict[str, Any]]:
    """Flatten OTLP requests into spans with decoded ids, attributes and resource."""
    spans = []
    for request in agent.otlp_requests():
        for rs in request["resource_spans"]:
            resource = {a["key"]: _value(a["value"]) for a in rs["resource"]["attributes"]}
            for ss in rs["scope_spans"]:
                for span in ss["spans"]:
                    spans.append(
                        {
                            "name": span["name"],
                            "trace_id": base64.b64decode(span["trace_id"]).hex(),
                            "span_id": base64.b64decode(span["span_id"]).hex(),
                            "parent_id": base64.b64decode(span.get("parent_span_id", "")).hex(),
                            "kind": span["kind"],
                            "attributes": {
                                a["key"]: _value(a["value"]) for a in span.get("attributes", [])
                            },
                            "resource": resource,
                        }
                    )
    return spans


def _value(v: dict[str, Any]) -> Any:
    ((kind, value),) = v.items()
    return int(value) if kind == "int_value" else value


@pytest.fixture
def agent(test_agent: TestAgent) -> TestAgent:
    test_agent.clear()
    return test_agent


def test_otlp_exporter_reaches_the_agent(agent: TestAgent) -> None:
    run_app({"OTEL_EXPORTER_OTLP_ENDPOINT": agent.otlp_url})
    spans = otlp_spans(agent)
    # The exporter POSTs once per invocation: the spans arrived before each return.
    assert len(agent.otlp_requests()) == 2
    roots = [s for s in spans if s["kind"] == "SPAN_KIND_SERVER"]
    assert [r["name"] for r in roots] == ["POST /todos", "POST /todos"]
    cold = next(r for r in roots if r["attributes"]["faas.coldstart"] is True)
    warm = next(r for r in roots if r is not cold)
    cold_trace = [s for s in spans if s["trace_id"] == cold["trace_id"]]
    warm_trace = [s for s in spans if s["trace_id"] == warm["trace_id"]]
    assert sorted(s["name"] for s in cold_trace) == sorted(
        ["POST /todos", "aws.lambda.init", "dsql.connect", "dsql.token.generate", "Save Todo"]
    )
    assert sorted(s["name"] for s in warm_trace) == ["POST /todos", "Save Todo"]
    by_name = {s["name"]: s for s in cold_trace}
    assert by_name["aws.lambda.init"]["parent_id"] == cold["span_id"]
    assert by_name["dsql.connect"]["parent_id"] == by_name["aws.lambda.init"]["span_id"]
    assert by_name["dsql.token.generate"]["parent_id"] == by_name["dsql.connect"]["span_id"]
    assert cold["attributes"]["faas.coldstart"] is True
    assert warm["attributes"]["faas.coldstart"] is False
    assert cold["attributes"]["operation.name"] == "aws.lambda"
    assert cold["attributes"]["resource.name"] == "POST /todos"
    resource = cold["resource"]
    assert resource["service.name"] == "todo-api"
    assert resource["deployment.environment.name"] == "ci"
    assert resource["service.version"] == "1.2.3"
    assert resource["cloud.platform"] == "aws_lambda"
    assert resource["faas.name"] == "todo-insert"


def test_datadog_exporter_reaches_the_agent_over_v05(agent: TestAgent) -> None:
    run_app({"OTEL_TRACES_EXPORTER": "datadog", "DD_TRACE_AGENT_URL": agent.trace_url})
    urls = [r["url"] for r in agent.requests() if "/traces" in r["url"]]
    assert urls and all(u.endswith("/v0.5/traces") for u in urls)
    traces = agent.datadog_traces()
    assert len(traces) == 2
    cold = next(t for t in traces if len(t) > 2)
    warm = next(t for t in traces if len(t) == 2)
    root = next(s for s in cold if s["parent_id"] == 0)
    assert root["name"] == "aws.lambda"
    assert root["resource"] == "POST /todos"
    assert root["service"] == "todo-api"
    assert root["type"] == "serverless"
    assert root["meta"]["env"] == "ci"
    assert root["metrics"]["faas.coldstart"] == 1.0
    by_name = {s["name"]: s for s in cold}
    assert by_name["aws.lambda.init"]["parent_id"] == root["span_id"]
    assert by_name["dsql.connect"]["parent_id"] == by_name["aws.lambda.init"]["span_id"]
    warm_root = next(s for s in warm if s["parent_id"] == 0)
    assert warm_root["metrics"]["faas.coldstart"] == 0.0


def test_both_exporters_give_datadog_the_same_names(agent: TestAgent) -> None:
    run_app({"OTEL_EXPORTER_OTLP_ENDPOINT": agent.otlp_url})
    run_app({"OTEL_TRACES_EXPORTER": "datadog", "DD_TRACE_AGENT_URL": agent.trace_url})
    # The extension names an OTLP span by its operation.name / resource.name attributes.
    from_otlp = sorted(
        (s["attributes"]["operation.name"], s["attributes"]["resource.name"])
        for s in otlp_spans(agent)
    )
    from_ddtrace = sorted(
        (s["name"], s["resource"]) for trace in agent.datadog_traces() for s in trace
    )
    assert from_otlp == from_ddtrace
    assert ("aws.lambda", "POST /todos") in from_otlp
    json.dumps(from_otlp)  # plain data, for the failure message above


def test_datadog_delivery_keeps_its_budget_against_an_agent_that_never_answers() -> None:
    """ddtrace's own flush waits its agent timeout for each socket step; the delivery waits
    only what it was given (the impending-timeout flush gets about 80 ms)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    script = (
        "import json, time\n"
        "import tracing\n"
        "from tracing import runtime\n"
        "tracing.setup_tracing(tracing.TracingConfig(exporter='datadog'))\n"
        "rt = runtime.current()\n"
        "rt.tracer.start_span('x').end()\n"
        "started = time.monotonic()\n"
        "ok = rt.delivery.flush(0.08)\n"
        "print(json.dumps({'ok': ok, 'waited': time.monotonic() - started}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DD_"))}
    env.update(
        {
            "DD_TRACE_AGENT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}",
            "DD_TRACE_AGENT_TIMEOUT_SECONDS": "3",
            "DSQLTRACE_FLUSH_TIMEOUT_MS": "3000",
        }
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["ok"] is False  # not delivered within the budget, and said so
    assert outcome["waited"] < 1.0  # far below the agent's 3 s timeout
