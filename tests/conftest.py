from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tracing.testing import InMemorySender, capture_spans, reset_tracing

LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "todo-insert",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/27/[$LATEST]abc",
    "AWS_REGION": "us-east-1",
}

_TRACING_VARS = (
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "DD_SERVICE",
    "DD_ENV",
    "DD_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
)


@pytest.fixture(autouse=True)
def fresh_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts as a new execution environment, with the Lambda variables set."""
    for name in _TRACING_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in LAMBDA_ENV.items():
        monkeypatch.setenv(name, value)
    reset_tracing()
    yield
    reset_tracing()
    logging.getLogger("dsql-lambda-tracing").handlers.clear()


@pytest.fixture
def sink() -> InMemorySender:
    """Tracing set up with an in-memory exporter behind the per-invocation flush."""
    return capture_spans()


@pytest.fixture(scope="session")
def test_agent():
    """The real Datadog APM test agent (fails, never skips, when it is not installed)."""
    from tests.agent import TestAgent

    agent = TestAgent()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (TLS only, throwaway CA), migrated, for the whole session."""
    from tests.pg import migrate, new_server

    server = new_server()
    migrate(server)
    yield server
    server.destroy()


@pytest.fixture
def dsql_env(postgres, monkeypatch: pytest.MonkeyPatch):
    """The handlers' DSQL settings pointed at the test server: token auth, verify-full TLS."""
    for name in ("DATABASE_URL", "DB_USER", "DB_SSLROOTCERT", "DB_CONNECT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLUSTER_ENDPOINT", "localhost")
    monkeypatch.setenv("PGPORT", str(postgres.port))
    monkeypatch.setenv("PGSSLROOTCERT", str(postgres.ca_file))
    monkeypatch.setenv("PGSSLNEGOTIATION", "postgres")  # the server is PostgreSQL 15
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTTESTTESTTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key-for-signing-only")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    postgres.psql("DELETE FROM todos")
    return postgres
