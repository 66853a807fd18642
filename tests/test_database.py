"""Connections under stress: real conflicts, a stopped server, killed connections, timeouts."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import uuid

import psycopg
import pytest

from handlers import names as app_names
from tests import functions
from tests.functions import call
from tests.pg import migrate, new_server
from tracing import names
from tracing.testing import InMemorySender


@pytest.fixture
def insert(dsql_env, sink: InMemorySender):
    module = functions.load("handlers.insert")
    yield module
    functions.close_all()


def wait_for_lock_wait(server, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).strip()
        if waiting != "0":
            return
        time.sleep(0.02)
    raise AssertionError("the PATCH never waited for the row lock")


def hold_row_then_commit(server, todo_id: str, request) -> dict:
    """Update the row in another transaction while ``request`` runs; commit to make it conflict."""
    holder = psycopg.connect(server.conninfo())
    result: dict = {}
    try:
        holder.execute("UPDATE todos SET name = 'holder' WHERE id = %s", (todo_id,))
        worker = threading.Thread(target=lambda: result.update(request()))
        worker.start()
        wait_for_lock_wait(server)
        holder.commit()
        worker.join(30)
    finally:
        holder.close()
    return result


def test_occ_conflict_is_retried_and_no_update_is_lost(insert, dsql_env, sink) -> None:
    todo = call(insert, "POST", "/todos", {"name": "contended"})["json"]
    response = hold_row_then_commit(
        dsql_env,
        todo["id"],
        lambda: call(insert, "PATCH", f"/todos/{todo['id']}", {"completed": True}),
    )
    assert response["statusCode"] == 200
    assert response["json"]["completed"] is True
    assert response["json"]["name"] == "holder"  # the other transaction's write survived
    stored = dsql_env.psql(f"SELECT name, completed FROM todos WHERE id = '{todo['id']}'").strip()
    assert stored == "holder|t"
    update_span = next(s for s in sink.spans if s.name == app_names.UPDATE_TODO)
    assert update_span.attributes[names.DSQL_OCC_RETRY_COUNT] == 1
    failed_queries = [
        s
        for s in sink.spans
        if s.name == "UPDATE todos" and s.attributes.get(names.DB_RESPONSE_STATUS_CODE) == "40001"
    ]
    assert len(failed_queries) == 1


def test_occ_retries_exhausted_is_503(insert, dsql_env, sink) -> None:
    todo = call(insert, "POST", "/todos", {"name": "contended"})["json"]
    insert.database.settings = dataclasses.replace(insert.database.settings, retries=0)
    response = hold_row_then_commit(
        dsql_env,
        todo["id"],
        lambda: call(insert, "PATCH", f"/todos/{todo['id']}", {"completed": True}),
    )
    assert response["statusCode"] == 503
    assert response["headers"]["retry-after"] == "1"
    assert response["json"]["error"]["code"] == "conflict"


def test_occ_storm_no_500s_and_every_acknowledged_update_applied(dsql_env, sink) -> None:
    environments = [functions.load("handlers.insert") for _ in range(6)]
    try:
        todo = call(environments[0], "POST", "/todos", {"name": "storm"})["json"]
        results: list[dict] = []
        lock = threading.Lock()

        def worker(env_index: int) -> None:
            for i in range(8):
                value = f"{env_index}-{i}"
                r = call(
                    environments[env_index], "PATCH", f"/todos/{todo['id']}", {"description": value}
                )
                with lock:
                    results.append((value, r))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(environments))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        functions.close_all()
    statuses = {r["statusCode"] for _, r in results}
    assert statuses <= {200, 503}, statuses
    acknowledged = [(v, r["json"]) for v, r in results if r["statusCode"] == 200]
    assert acknowledged
    for value, body in acknowledged:
        assert body["description"] == value  # each answer shows its own write applied
    last = max(acknowledged, key=lambda item: item[1]["updated_at"])[0]
    stored = dsql_env.psql(f"SELECT description FROM todos WHERE id = '{todo['id']}'").strip()
    assert stored == last


@pytest.fixture
def own_postgres(monkeypatch):
    """A server of this test's own, to stop and kill without disturbing the others."""
    server = new_server()
    migrate(server)
    monkeypatch.setenv("PGPORT", str(server.port))
    monkeypatch.setenv("PGSSLROOTCERT", str(server.ca_file))
    yield server
    functions.close_all()
    server.destroy()


def test_database_stopped_then_restarted(dsql_env, own_postgres, sink) -> None:
    module = functions.load("handlers.insert")
    assert call(module, "POST", "/todos", {"name": "before"})["statusCode"] == 201
    own_postgres.stop("fast")
    started = time.monotonic()
    down = call(module, "POST", "/todos", {"name": "during"})
    elapsed = time.monotonic() - started
    assert down["statusCode"] == 503
    assert down["headers"]["retry-after"] == "1"
    assert down["json"]["error"]["code"] == "database_unavailable"
    assert elapsed < module.database.settings.connect_timeout_s + 1
    own_postgres.start()
    up = call(module, "POST", "/todos", {"name": "after"})
    assert up["statusCode"] == 201
    names_stored = own_postgres.psql("SELECT name FROM todos ORDER BY created_at").split()
    assert names_stored == ["before", "after"]


def test_server_side_termination_is_recovered_transparently(
    dsql_env, own_postgres, sink, monkeypatch
) -> None:
    from handlers.token import TokenGenerator

    tokens: list[str] = []
    original = TokenGenerator.generate
    monkeypatch.setattr(
        TokenGenerator, "generate", lambda self: tokens.append(original(self)) or tokens[-1]
    )
    select = functions.load("handlers.select")
    insert = functions.load("handlers.insert")
    todo = call(insert, "POST", "/todos", {"name": "survivor"})["json"]
    assert call(select, "GET", "/todos")["statusCode"] == 200
    before = len(tokens)
    killed = own_postgres.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'todo-insert'"
    ).strip()
    assert killed == "2"  # both functions' connections (they share the function name here)
    sink.clear()
    listing = call(select, "GET", "/todos")
    assert listing["statusCode"] == 200
    assert [t["id"] for t in listing["json"]["todos"]] == [todo["id"]]
    assert len(tokens) == before + 1  # a fresh token for the new connection
    query_span = next(s for s in sink.spans if s.name == app_names.QUERY_TODOS)
    assert query_span.attributes[names.DSQL_RECONNECT] is True
    patched = call(insert, "PATCH", f"/todos/{todo['id']}", {"completed": True})
    assert patched["statusCode"] == 200


def test_unreachable_database_is_503_within_the_connect_timeout(
    dsql_env, sink, monkeypatch
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts, never answers: a blackholed endpoint
    monkeypatch.setenv("PGPORT", str(listener.getsockname()[1]))
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "2")
    try:
        started = time.monotonic()
        module = functions.load("handlers.select")  # init cannot connect: logged, not fatal
        response = call(module, "GET", "/todos")
        elapsed = time.monotonic() - started
    finally:
        functions.close_all()
        listener.close()
    assert response["statusCode"] == 503
    assert response["headers"]["retry-after"] == "1"
    assert elapsed < 2 * 2 + 2  # init's attempt and the request's, each bounded


def test_migrate_is_safe_to_run_twice(postgres) -> None:
    migrate(postgres)
    migrate(postgres)
    columns = postgres.psql(
        "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_name = 'todos'"
    ).strip()
    assert columns == "id,name,description,completed,created_at,updated_at"
    index = postgres.psql(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'todos' ORDER BY 1"
    ).split()
    assert "todos_created_at_id" in index


def test_unique_id_per_todo(insert) -> None:
    ids = {call(insert, "POST", "/todos", {"name": str(i)})["json"]["id"] for i in range(20)}
    assert len(ids) == 20 and all(uuid.UUID(i).version == 4 for i in ids)


@pytest.mark.postgres
def test_a_cursor_factory_of_ones_own_is_kept_and_traced(postgres, sink) -> None:
    from tracing import coldstart
    from tracing.db import AsyncTracedConnection, TracedConnection

    coldstart.configure(enabled=False)
    with TracedConnection.connect(
        postgres.conninfo(), autocommit=True, cursor_factory=psycopg.ClientCursor
    ) as conn:
        cursor = conn.execute("SELECT %s::int AS n", (41,))
        assert isinstance(cursor, psycopg.ClientCursor)
        assert cursor.fetchone() == (41,)

    async def run_async() -> None:
        conn = await AsyncTracedConnection.connect(
            postgres.conninfo(), autocommit=True, cursor_factory=psycopg.AsyncClientCursor
        )
        async with conn:
            cursor = await conn.execute("SELECT 2")
            assert isinstance(cursor, psycopg.AsyncClientCursor)

    import asyncio

    asyncio.run(run_async())
    from tracing import runtime

    runtime.current().delivery.flush()
    queries = [
        s for s in sink.spans if s.attributes.get(names.DD_OPERATION_NAME) == "postgresql.query"
    ]
    assert [s.attributes[names.DB_QUERY_TEXT] for s in queries] == [
        "SELECT %s::int AS n",
        "SELECT ?",
    ]
    # A plain connection's connect span is named for PostgreSQL, not for DSQL.
    connects = [s.name for s in sink.spans if s.name.endswith(".connect")]
    assert connects == [names.DB_CONNECT, names.DB_CONNECT]


def test_connection_lifetimes_are_jittered_within_five_percent(dsql_env, sink) -> None:
    from handlers.database import Database, Settings

    settings = dataclasses.replace(Settings.from_env(), max_lifetime_s=1000.0)
    lifetimes = []
    for _ in range(12):
        database = Database(settings)
        database.connect()
        lifetimes.append(database._lifetime_s)
        database.close()
    assert all(950.0 <= lifetime <= 1000.0 for lifetime in lifetimes)
    assert len(set(lifetimes)) > 6  # not all renewed at the same moment
    # And a connection past its (jittered) lifetime is replaced on the next use.
    database = Database(dataclasses.replace(settings, max_lifetime_s=0.05))
    first = database.connection()
    pid = first.info.backend_pid
    time.sleep(0.06)
    assert database.connection().info.backend_pid != pid
    database.close()
