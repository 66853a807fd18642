"""Connections refused for the server's connection limits (SQLSTATE 53300 here, from a real
PostgreSQL role with CONNECTION LIMIT 1; DSQL's 53400 takes the same path): retried with
backoff within the deadline, counted on the connect span, else a 503 with Retry-After."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry.trace import SpanKind

from handlers.database import Database, DatabaseUnavailable, Settings
from tracing import names
from tracing.testing import InMemorySender

ROLE, PASSWORD = "limited_role", "limited-role-password"


@pytest.fixture(scope="module")
def limited(postgres) -> str:
    """A role allowed one connection at a time; its URL."""
    postgres.add_password_role(ROLE, PASSWORD, superuser=False, connection_limit=1)
    return postgres.url(user=ROLE).replace(f"{ROLE}@", f"{ROLE}:{PASSWORD}@")


@pytest.fixture(autouse=True)
def after_init(sink: InMemorySender) -> None:
    """As in an invocation: not an init phase (those are replayed at the first one)."""
    from tracing import coldstart

    coldstart.begin_invocation()


@pytest.fixture
def holder(limited) -> Iterator[psycopg.Connection]:
    conn = psycopg.connect(limited, autocommit=True)
    yield conn
    conn.close()


def _database(url: str) -> Database:
    return Database(
        Settings(
            database_url=url,
            endpoint=None,
            region="us-east-1",
            user=ROLE,
            dbname="postgres",
            connect_timeout_s=3,
            max_lifetime_s=3300,
            sslrootcert=None,
        )
    )


def _connects(sink: InMemorySender) -> list:
    from tracing import runtime

    rt = runtime.current()
    assert rt is not None
    rt.delivery.flush(5)  # no invocation ended them out: deliver what the connects made
    return [s for s in sink.spans if s.name == names.DB_CONNECT and s.kind is SpanKind.CLIENT]


def test_a_refused_connection_is_retried_until_the_limit_frees(
    sink: InMemorySender, limited, holder
) -> None:
    threading.Timer(0.15, holder.close).start()  # the other connection goes away
    database = _database(limited)
    conn = database.connect(deadline=time.monotonic() + 5)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        database.close()
    spans = _connects(sink)
    refused, accepted = spans[:-1], spans[-1]
    assert refused and all(s.attributes[names.DB_RESPONSE_STATUS_CODE] == "53300" for s in refused)
    assert accepted.attributes[names.DSQL_CONNECT_RETRY_COUNT] == len(refused)
    assert names.DB_RESPONSE_STATUS_CODE not in accepted.attributes


def test_it_gives_up_at_the_deadline(sink: InMemorySender, limited, holder) -> None:
    database = _database(limited)
    deadline_ns = time.time_ns() + 300_000_000
    with pytest.raises(DatabaseUnavailable, match=r"SQLSTATE 53300\), still after"):
        database.connect(deadline=time.monotonic() + 0.3)
    attempts = _connects(sink)
    assert len(attempts) >= 2
    # No attempt was started past the deadline (the backoff gives up instead).
    assert all(s.start_time < deadline_ns for s in attempts)
    assert PASSWORD not in str(sink.spans)


def test_the_api_answers_503_with_retry_after(
    sink: InMemorySender, limited, holder, monkeypatch
) -> None:
    from handlers.api import respond
    from handlers.http import Response, Router
    from tests.lambda_events import LambdaContext, http_event

    database = _database(limited)
    database.settings = Settings(**{**database.settings.__dict__, "connect_retries": 2})
    router = Router()

    def list_todos(request) -> Response:
        database.run(lambda conn: conn.execute("SELECT 1").fetchone(), idempotent=True)
        return Response(200, {"ok": True})

    router.add("GET", "/todos", list_todos)
    response = respond(router, http_event("GET", "/todos"), LambdaContext())
    assert response.status == 503
    assert "retry-after" in {k.lower() for k in response.headers}
    assert response.body["error"]["code"] == "database_unavailable"
    assert PASSWORD not in str(response.to_lambda())
