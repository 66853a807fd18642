"""The Todo API end to end on a real PostgreSQL server, through the DSQL connection path."""

from __future__ import annotations

import base64
import datetime
import json
import uuid

import pytest

from handlers import names as app_names
from tests import functions
from tests.functions import call
from tracing import names
from tracing.testing import InMemorySender


@pytest.fixture
def insert(dsql_env, sink: InMemorySender):
    module = functions.load("handlers.insert")
    yield module
    functions.close_all()


@pytest.fixture
def select(dsql_env, sink: InMemorySender):
    module = functions.load("handlers.select")
    yield module
    functions.close_all()


def by_name(spans, name):
    matches = [s for s in spans if s.name == name]
    assert matches, f"no {name!r} in {[s.name for s in spans]}"
    return matches[0]


def test_post_creates_a_todo(insert, dsql_env) -> None:
    response = call(insert, "POST", "/todos", {"name": "Buy milk", "description": "2 litres"})
    assert response["statusCode"] == 201
    todo = response["json"]
    assert uuid.UUID(todo["id"]).version == 4
    assert response["headers"]["location"] == f"/todos/{todo['id']}"
    assert response["headers"]["content-type"] == "application/json"
    assert todo["name"] == "Buy milk"
    assert todo["description"] == "2 litres"
    assert todo["completed"] is False
    created = datetime.datetime.fromisoformat(todo["created_at"].replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.UTC) - created).total_seconds()) < 60
    assert todo["created_at"].endswith("Z") and todo["updated_at"] == todo["created_at"]
    stored = dsql_env.psql(
        f"SELECT name, description, completed FROM todos WHERE id = '{todo['id']}'"
    )
    assert stored.strip() == "Buy milk|2 litres|f"


def test_cold_post_span_tree(insert, sink: InMemorySender) -> None:
    response = call(insert, "POST", "/todos", {"name": "traced"})
    assert response["statusCode"] == 201
    spans = sink.spans
    root = by_name(spans, "POST /todos")
    init = by_name(spans, names.LAMBDA_INIT)
    token = by_name(spans, names.DSQL_TOKEN_GENERATE)
    connect = by_name(spans, names.DSQL_CONNECT)
    save = by_name(spans, app_names.SAVE_TODO)
    query = by_name(spans, "INSERT todos")
    assert root.parent is None and root.attributes[names.FAAS_COLDSTART] is True
    assert init.parent.span_id == root.context.span_id
    assert token.parent.span_id == init.context.span_id
    assert connect.parent.span_id == init.context.span_id
    assert token.end_time <= connect.start_time
    assert save.parent.span_id == root.context.span_id
    assert query.parent.span_id == save.context.span_id
    assert query.attributes[names.DB_SYSTEM_NAME] == "postgresql"
    assert query.attributes[names.DB_OPERATION_NAME] == "INSERT"
    assert query.attributes[names.DB_COLLECTION_NAME] == "todos"
    assert query.attributes[names.DB_NAMESPACE] == "postgres"
    assert query.attributes[names.SERVER_ADDRESS] == "localhost"
    assert "traced" not in query.attributes[names.DB_QUERY_TEXT]
    assert "%s" in query.attributes[names.DB_QUERY_TEXT]
    assert connect.attributes[names.SERVER_ADDRESS] == "localhost"
    assert connect.attributes[names.DB_USER] == "admin"
    assert token.attributes[names.CLOUD_REGION] == "us-east-1"


def test_warm_get_has_no_init_spans(select, insert, sink: InMemorySender) -> None:
    call(insert, "POST", "/todos", {"name": "one"})
    call(select, "GET", "/todos")  # the select function's first (cold) call
    sink.clear()
    response = call(select, "GET", "/todos")
    assert response["statusCode"] == 200
    spans = sink.spans
    assert sorted(s.name for s in spans) == sorted(
        ["GET /todos", app_names.QUERY_TODOS, "SELECT todos"]
    )
    root = by_name(spans, "GET /todos")
    assert root.attributes[names.FAAS_COLDSTART] is False


def test_token_is_the_password_and_appears_nowhere_else(
    dsql_env, sink: InMemorySender, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    from handlers.token import TokenGenerator

    tokens: list[str] = []
    original = TokenGenerator.generate

    def recording(self):
        token = original(self)
        tokens.append(token)
        return token

    monkeypatch.setattr(TokenGenerator, "generate", recording)
    caplog.set_level("DEBUG")
    module = functions.load("handlers.insert")
    try:
        responses = [
            call(module, "POST", "/todos", {"name": "secret-free"}),
            call(module, "POST", "/todos", {"name": 5}),
            call(module, "PATCH", f"/todos/{uuid.uuid4()}", {"completed": True}),
        ]
        conn = module.database.connection()
        assert tokens and conn.info.password == tokens[-1]
        assert "X-Amz-Signature=" in tokens[-1]
        signature = tokens[-1].split("X-Amz-Signature=")[1]
    finally:
        functions.close_all()
    everything = "\n".join(
        [s.to_json() for s in sink.spans] + [caplog.text] + [json.dumps(r) for r in responses]
    )
    assert tokens[-1] not in everything
    assert signature not in everything
    assert "test-secret-key-for-signing-only" not in everything


def test_a_fresh_token_for_every_new_connection(dsql_env, sink, monkeypatch) -> None:
    from handlers.token import TokenGenerator

    tokens: list[str] = []
    original = TokenGenerator.generate
    monkeypatch.setattr(
        TokenGenerator, "generate", lambda self: tokens.append(original(self)) or tokens[-1]
    )
    module = functions.load("handlers.select")
    try:
        assert call(module, "GET", "/todos")["statusCode"] == 200
        module.database.connect()
        module.database.connect()
        assert len(tokens) == 3
    finally:
        functions.close_all()


def test_list_is_newest_first_with_cursor_pagination(insert, select) -> None:
    created = [
        call(insert, "POST", "/todos", {"name": f"todo {i}"})["json"]["id"] for i in range(25)
    ]
    first = call(select, "GET", "/todos")
    assert first["statusCode"] == 200
    assert len(first["json"]["todos"]) == 10  # the seed's page size
    seen = []
    page = call(select, "GET", "/todos", query="limit=7")
    while True:
        seen += [t["id"] for t in page["json"]["todos"]]
        if page["json"]["next"] is None:
            break
        page = call(select, "GET", "/todos", query=f"limit=7&cursor={page['json']['next']}")
    assert seen == list(reversed(created))


def test_get_one_and_404(insert, select) -> None:
    todo = call(insert, "POST", "/todos", {"name": "find me"})["json"]
    found = call(select, "GET", f"/todos/{todo['id']}")
    assert found["statusCode"] == 200 and found["json"] == todo
    assert call(select, "GET", "/todos/" + todo["id"].upper())["json"] == todo
    hexed = todo["id"].replace("-", "")
    for path in (f"/todos/{uuid.uuid4()}", "/todos/not-a-uuid", f"/todos/{hexed}", "/todos/%00"):
        missing = call(select, "GET", path)
        assert missing["statusCode"] == 404
        assert missing["json"]["error"]["code"] == "not_found"


def test_patch_and_delete(insert, select) -> None:
    todo = call(insert, "POST", "/todos", {"name": "change me"})["json"]
    patched = call(
        insert, "PATCH", f"/todos/{todo['id']}", {"completed": True, "description": None}
    )
    assert patched["statusCode"] == 200
    assert patched["json"]["completed"] is True
    assert patched["json"]["name"] == "change me"
    assert patched["json"]["updated_at"] >= todo["updated_at"]
    assert call(insert, "PATCH", f"/todos/{uuid.uuid4()}", {"name": "x"})["statusCode"] == 404
    deleted = call(insert, "DELETE", f"/todos/{todo['id']}")
    assert deleted["statusCode"] == 204 and "body" not in deleted
    assert call(insert, "DELETE", f"/todos/{todo['id']}")["statusCode"] == 404
    assert call(select, "GET", f"/todos/{todo['id']}")["statusCode"] == 404


def test_strings_are_stored_exactly(insert, select) -> None:
    name = "é ☃ 𝄞 \t tab ' \" \\ ; DROP TABLE todos; --"
    todo = call(insert, "POST", "/todos", {"name": name, "description": "x" * 2000})["json"]
    again = call(select, "GET", f"/todos/{todo['id']}")["json"]
    assert again["name"] == name
    assert again["description"] == "x" * 2000
    assert call(insert, "POST", "/todos", {"name": "y" * 200})["statusCode"] == 201


BAD_BODIES = [
    ("{not json", 400, "invalid_json", None),
    ("[1, 2]", 400, "invalid_json", None),
    ("", 400, "invalid_json", None),
    ('{"name": "a", "name": "b"}', 400, "invalid_json", "name"),
    ('{"name": NaN}', 400, "invalid_json", None),
    ("[" * 60000, 400, "invalid_json", None),
    ({}, 400, "missing_field", "name"),
    ({"name": ""}, 400, "invalid_value", "name"),
    ({"name": 42}, 400, "invalid_type", "name"),
    ({"name": None}, 400, "invalid_type", "name"),
    ({"name": "x" * 201}, 400, "too_long", "name"),
    ({"name": "ok", "description": "d" * 2001}, 400, "too_long", "description"),
    ({"name": "ok", "description": 7}, 400, "invalid_type", "description"),
    ({"name": "ok", "completed": "yes"}, 400, "invalid_type", "completed"),
    ({"name": "ok", "completed": 1}, 400, "invalid_type", "completed"),
    ({"name": "ok", "priority": 1}, 400, "unknown_field", "priority"),
    ({"name": "nul\u0000byte"}, 400, "invalid_value", "name"),
    ('{"name": "\\ud800"}', 400, "invalid_value", "name"),
]


@pytest.mark.parametrize(("body", "status", "code", "field"), BAD_BODIES)
def test_bad_post_bodies(insert, dsql_env, body, status, code, field) -> None:
    response = call(insert, "POST", "/todos", body)
    assert response["statusCode"] == status, response
    error = response["json"]["error"]
    assert error["code"] == code
    assert error.get("field") == field
    assert error["message"]
    assert dsql_env.psql("SELECT count(*) FROM todos").strip() == "0"


def test_non_utf8_and_bad_base64_bodies(insert) -> None:
    not_utf8 = call(insert, "POST", "/todos", b'{"name": "\xff\xfe"}')
    assert not_utf8["statusCode"] == 400
    assert "UTF-8" in not_utf8["json"]["error"]["message"]
    event_body = {"name": "from base64"}
    good = call(insert, "POST", "/todos", json.dumps(event_body).encode())
    assert good["statusCode"] == 201
    from tests.lambda_events import LambdaContext, http_event

    event = http_event("POST", "/todos", body="%%%not-base64%%%")
    event["isBase64Encoded"] = True
    bad = insert.handler(event, LambdaContext())
    assert bad["statusCode"] == 400
    assert "base64" in json.loads(bad["body"])["error"]["message"]


def test_413_for_large_bodies(insert) -> None:
    big = json.dumps({"name": "x", "description": "y" * 70_000})
    response = call(insert, "POST", "/todos", big)
    assert response["statusCode"] == 413
    assert response["json"]["error"]["code"] == "payload_too_large"
    response = call(insert, "POST", "/todos", base64.b64decode(base64.b64encode(b"z" * 70_000)))
    assert response["statusCode"] == 413


def test_patch_validation(insert) -> None:
    todo = call(insert, "POST", "/todos", {"name": "p"})["json"]
    path = f"/todos/{todo['id']}"
    assert call(insert, "PATCH", path, {})["json"]["error"]["code"] == "missing_field"
    assert call(insert, "PATCH", path, {"name": ""})["json"]["error"]["field"] == "name"
    assert call(insert, "PATCH", path, {"id": "x"})["json"]["error"]["code"] == "unknown_field"
    assert call(insert, "PATCH", path, {"completed": None})["statusCode"] == 400


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=1,2", "limit"),
        ("limit=%EF%BC%91", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=", "cursor"),
        ("sort=asc", "sort"),
    ],
)
def test_bad_list_parameters(select, query, field) -> None:
    response = call(select, "GET", "/todos", query=query)
    assert response["statusCode"] == 400
    assert response["json"]["error"]["field"] == field


def test_404_and_405(insert, select) -> None:
    missing = call(select, "GET", "/nothing/here")
    assert missing["statusCode"] == 404
    assert missing["json"]["error"]["code"] == "not_found"
    wrong = call(insert, "PUT", "/todos")
    assert wrong["statusCode"] == 405
    assert wrong["headers"]["allow"] == "POST"
    assert wrong["json"]["error"]["code"] == "method_not_allowed"
    wrong = call(select, "DELETE", f"/todos/{uuid.uuid4()}")
    assert wrong["statusCode"] == 405 and wrong["headers"]["allow"] == "GET"


def test_not_an_http_event(insert) -> None:
    from tests.lambda_events import LambdaContext

    response = insert.handler({"hello": "world"}, LambdaContext())
    assert response["statusCode"] == 400
