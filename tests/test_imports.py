"""Importing the toolkit stays cheap: heavy modules load only when they are needed."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.agent import ROOT

HEAVY = ("ddtrace", "requests", "grpc", "google.protobuf", "urllib3", "psycopg", "boto3")


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}


def test_import_tracing_loads_no_exporter_and_no_sdk() -> None:
    modules = loaded_after("import tracing")
    assert heavy_in(modules) == set()
    assert "tracing.otlp" not in modules
    assert "tracing.datadog" not in modules
    assert not any(m.startswith("opentelemetry.sdk") for m in modules)
    assert "http.client" not in modules


def test_otlp_setup_needs_no_requests_nor_protobuf() -> None:
    modules = loaded_after("import tracing; tracing.setup_tracing()")
    assert "tracing.otlp" not in modules  # imported at the first export, after the response
    assert "ssl" not in modules  # only an https:// endpoint needs it
    assert heavy_in(modules) == set()
    exported = loaded_after(
        "import tracing\n"
        "from tracing import runtime\n"
        "tracing.setup_tracing()\n"
        "runtime.current().tracer.start_span('x').end()\n"
        "runtime.current().delivery.flush(0.05)",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert "tracing.otlp" in exported
    assert heavy_in(exported) == set()
    # The lean provider (tracing.tracer) makes and exports spans without the SDK's
    # tracing machinery (25-40 ms of import at every cold start).
    assert not any(m.startswith("opentelemetry.sdk.trace") for m in exported)
    assert "opentelemetry.sdk.resources" not in exported


def test_datadog_is_imported_only_when_chosen() -> None:
    modules = loaded_after(
        "import tracing; tracing.setup_tracing(tracing.TracingConfig(exporter='datadog'))",
        env={"DD_TRACE_AGENT_URL": "http://127.0.0.1:9"},
    )
    assert "ddtrace" in modules


def test_explains_are_loaded_only_when_turned_on() -> None:
    code = "import tracing, tracing.db, tracing.handler; tracing.setup_tracing()"
    assert "tracing.explain" not in loaded_after(code)
    assert "tracing.plans" not in loaded_after(code)
    on = loaded_after(code, env={"DSQLTRACE_EXPLAIN": "slow,100"})
    assert "tracing.explain" in on
    assert "tracing.plans" not in on  # the parser: at the first explain, after a response


def test_setup_in_lambda_keeps_enum_heavy_modules_off_the_cold_start() -> None:
    """Registering the extension and building the provider import neither ``socket`` nor
    ``signal`` (their enums cost about 7 ms), nor ``random`` (2 ms), nor the SDK."""
    modules = loaded_after(
        "import tracing; tracing.setup_tracing()",
        env={"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9", "AWS_LAMBDA_FUNCTION_NAME": "f"},
    )
    assert "tracing.extension" in modules  # it did try to register
    for module in ("socket", "signal", "random", "opentelemetry.sdk.trace"):
        assert module not in modules, module
