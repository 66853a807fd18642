"""Property-based fuzzing of the local Function URLs, checked against the OpenAPI description."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.figures import record
from tests.stack_fixture import new_stack

OPENAPI = json.loads((Path(__file__).parent.parent / "handlers" / "openapi.json").read_text())
INJECTIONS = [
    "'; DROP TABLE todos; --",
    '" OR 1=1 --',
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "../../etc/passwd",
    "%00",
    "\\x00",
    "{{7*7}}",
    "' UNION SELECT * FROM pg_user --",
    "😀" * 60,
    "\u202e\u0301\ufeff",
    "a\u0000b",
    "Robert'); DROP TABLE todos;--",
]
COUNTS = {"requests": 0, "server_errors": 0, "stored_mismatches": 0}


@pytest.fixture(scope="module")
def stack():
    s = new_stack()
    yield s
    s.stop()
    record(
        "fuzz",
        cases=COUNTS["requests"],
        server_errors=COUNTS["server_errors"],
        stored_mismatches=COUNTS["stored_mismatches"],
    )


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        yield c


def _validator(ref: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": ref, "components": OPENAPI["components"]})


def _template(path: str) -> str | None:
    if path.rstrip("/") == "/todos":
        return "/todos"
    if path.startswith("/todos/") and path.count("/") == 2:
        return "/todos/{id}"
    return None


def check(response: httpx.Response, method: str, path: str) -> None:
    """What every answer must be: no 5xx, JSON errors, and what the OpenAPI description says."""
    COUNTS["requests"] += 1
    status = response.status_code
    if status >= 500:
        COUNTS["server_errors"] += 1
    assert status < 500, (method, path, status, response.text[:300])
    if status == 204:
        assert response.content == b""
        return
    if method == "HEAD":
        return
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    if status >= 400:
        _validator("#/components/schemas/Error").validate(body)
        if status == 405:
            assert response.headers["allow"]
        return
    template = _template(path.split("?")[0])
    assert template is not None, (method, path, status)
    operation = OPENAPI["paths"][template][method.lower()]
    assert str(status) in operation["responses"], (method, path, status)
    schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    _validator(schema["$ref"]).validate(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
names = st.one_of(
    st.text(max_size=220),
    st.sampled_from(INJECTIONS),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=195, max_size=205),
)
bodies = st.one_of(
    st.fixed_dictionaries(
        {"name": names},
        optional={
            "description": st.none() | st.text(max_size=2100) | json_values,
            "completed": st.booleans() | json_values,
            "extra": json_values,
        },
    ),
    st.dictionaries(
        st.sampled_from(["name", "description", "completed", "id", "x"]), json_values, max_size=4
    ),
    json_values,
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            '{"name": "\\ud800"}',
            "{",
            "[]",
            "null",
            '"x"',
            '{"name": NaN}',
            '{"name": "a", "name": "b"}',
            "[" * 5000,
            '{"name": 1e999}',
            "\ufeff{}",
        ]
    ),
)


@seed(20261127)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=200,
    ),
    description=st.none()
    | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=2000,
    ),
    completed=st.booleans(),
)
def test_every_valid_todo_is_stored_exactly_as_sent(client, name, description, completed) -> None:
    sent = {"name": name, "description": description, "completed": completed}
    created = client.post("/todos", json=sent)
    check(created, "POST", "/todos")
    assert created.status_code == 201, created.text
    body = created.json()
    again = client.get(f"/todos/{body['id']}")
    check(again, "GET", f"/todos/{body['id']}")
    stored = again.json()
    if (stored["name"], stored["description"], stored["completed"]) != (
        name,
        description,
        completed,
    ):
        COUNTS["stored_mismatches"] += 1
    assert (body["name"], body["description"], body["completed"]) == (name, description, completed)
    assert (stored["name"], stored["description"], stored["completed"]) == (
        name,
        description,
        completed,
    )


def _path(draw_id: str) -> str:
    return "/todos/" + draw_id


paths = st.one_of(
    st.just("/todos"),
    st.just("/todos/"),
    st.builds(lambda u: f"/todos/{u}", st.uuids()),
    st.builds(
        lambda t: "/todos/" + quote(t, safe=""),
        st.text(min_size=1, max_size=40) | st.sampled_from(INJECTIONS),
    ),
    st.builds(lambda t: "/" + quote(t, safe="/"), st.text(max_size=30)),
)
queries = st.dictionaries(
    st.sampled_from(["limit", "cursor", "sort", "x"]) | st.text(min_size=1, max_size=6),
    st.integers(-5, 200).map(str) | st.text(max_size=12) | st.sampled_from(INJECTIONS),
    max_size=3,
)
methods = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/octet-stream",
        "application/json; charset=utf-16",
        "",
    ]
)


@seed(20261128)
@settings(max_examples=1600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=methods,
    path=paths,
    query=queries,
    body=bodies | st.none(),
    raw=st.none() | raw_bodies,
    content_type=content_types,
)
def test_any_request_gets_a_clean_answer(
    client, method, path, query, body, raw, content_type
) -> None:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    target = path + ("?" + urlencode(query) if query else "")
    headers = {"content-type": content_type} if content_type else {}
    response = client.request(method, target, content=data, headers=headers)
    check(response, method, target)


def test_fuzz_found_real_todos_to_patch(client) -> None:
    created = client.post("/todos", json={"name": "patch me"}).json()
    for body in ({"completed": True}, {"name": ""}, {"description": None}, {"zzz": 1}, {}):
        response = client.patch(f"/todos/{created['id']}", json=body)
        check(response, "PATCH", f"/todos/{created['id']}")
    response = client.delete(f"/todos/{uuid.uuid4()}")
    check(response, "DELETE", "/todos/x")
    assert response.status_code == 404
