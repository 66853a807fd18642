"""traced_handler: span tree, attributes, cold start, errors, propagation, delivery."""

from __future__ import annotations

import time

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.lambda_events import FUNCTION_ARN, LambdaContext, http_event
from tests.support import FakeClock, eventually
from tracing import TracingConfig, coldstart, names, runtime, setup_tracing, traced, traced_handler
from tracing.testing import InMemorySender, make_runtime

ROUTES = ["/todos", "/todos/{id}"]


def by_name(spans, name):
    found = [s for s in spans if s.name == name]
    assert found, f"no span {name!r} in {[s.name for s in spans]}"
    return found[0]


def make_handler(status: int = 201):
    @traced("Save Todo")
    def save() -> None:
        time.sleep(0.001)

    @traced_handler(routes=ROUTES)
    def handler(event, context):
        save()
        return {"statusCode": status, "body": "{}"}

    return handler


def test_cold_then_warm_span_tree(sink: InMemorySender) -> None:
    # Init work, as a handler module does it at import time.
    with traced(names.DSQL_CONNECT) as connect:
        connect.set_attribute("server.address", "db.local")
        with traced(names.DSQL_TOKEN_GENERATE):
            time.sleep(0.002)
    handler = make_handler()

    handler(http_event("POST", "/todos"), LambdaContext())
    cold = sink.spans
    root = by_name(cold, "POST /todos")
    init = by_name(cold, names.LAMBDA_INIT)
    connect_span = by_name(cold, names.DSQL_CONNECT)
    token = by_name(cold, names.DSQL_TOKEN_GENERATE)
    save = by_name(cold, "Save Todo")

    assert len(cold) == 5
    assert {s.context.trace_id for s in cold} == {root.context.trace_id}
    assert root.parent is None
    assert init.parent.span_id == root.context.span_id
    assert connect_span.parent.span_id == init.context.span_id
    assert token.parent.span_id == connect_span.context.span_id
    assert save.parent.span_id == root.context.span_id
    # Back-dated: the init phases happened before the invocation started.
    assert init.start_time <= connect_span.start_time <= token.start_time
    assert token.end_time <= connect_span.end_time <= init.end_time <= root.start_time
    assert token.end_time - token.start_time >= 2_000_000
    assert connect_span.attributes["server.address"] == "db.local"
    assert connect_span.attributes[names.INIT_PHASE] is True
    assert root.attributes[names.FAAS_COLDSTART] is True

    sink.clear()
    handler(http_event("GET", "/todos/42"), LambdaContext())
    warm = sink.spans
    assert [s.name for s in warm] == ["Save Todo", "GET /todos/{id}"]
    assert by_name(warm, "GET /todos/{id}").attributes[names.FAAS_COLDSTART] is False


def test_same_code_after_init_is_an_ordinary_child_span(sink: InMemorySender) -> None:
    @traced_handler
    def handler(event, context):
        with traced(names.DSQL_CONNECT):  # a reconnect during an invocation
            pass
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    sink.clear()
    handler(http_event(), LambdaContext())
    connect = by_name(sink.spans, names.DSQL_CONNECT)
    root = by_name(sink.spans, "GET")
    assert connect.parent.span_id == root.context.span_id
    assert names.INIT_PHASE not in connect.attributes
    assert not [s for s in sink.spans if s.name == names.LAMBDA_INIT]


def test_server_span_attributes(sink: InMemorySender) -> None:
    handler = make_handler(status=201)
    context = LambdaContext()
    handler(http_event("POST", "/todos", headers={"user-agent": "k6/0.50"}), context)
    root = by_name(sink.spans, "POST /todos")
    attrs = root.attributes
    assert root.kind is SpanKind.SERVER
    assert attrs[names.FAAS_TRIGGER] == "http"
    assert attrs[names.FAAS_INVOCATION_ID] == context.aws_request_id
    assert attrs[names.CLOUD_RESOURCE_ID] == FUNCTION_ARN
    assert attrs[names.CLOUD_ACCOUNT_ID] == "123456789012"
    assert attrs[names.HTTP_REQUEST_METHOD] == "POST"
    assert attrs[names.HTTP_ROUTE] == "/todos"
    assert attrs[names.URL_PATH] == "/todos"
    assert attrs[names.HTTP_RESPONSE_STATUS_CODE] == 201
    assert attrs[names.CLIENT_ADDRESS] == "203.0.113.7"
    assert attrs[names.USER_AGENT_ORIGINAL] == "k6/0.50"
    assert attrs[names.DD_OPERATION_NAME] == "aws.lambda"
    assert attrs[names.DD_RESOURCE_NAME] == "POST /todos"
    assert root.status.status_code is StatusCode.UNSET
    resource = root.resource.attributes
    assert resource[names.CLOUD_PROVIDER] == "aws"
    assert resource[names.CLOUD_PLATFORM] == "aws_lambda"
    assert resource[names.CLOUD_REGION] == "us-east-1"
    assert resource[names.FAAS_NAME] == "todo-insert"
    assert resource[names.FAAS_VERSION] == "$LATEST"
    assert resource[names.FAAS_INSTANCE] == "2026/11/27/[$LATEST]abc"
    assert resource[names.FAAS_MAX_MEMORY] == 256 * 1024 * 1024
    assert resource[names.SERVICE_NAME] == "test"


def test_api_gateway_route_key_and_unknown_paths(sink: InMemorySender) -> None:
    handler = make_handler(200)
    handler(http_event("GET", "/todos/9", route_key="GET /todos/{todoId}"), LambdaContext())
    handler(http_event("GET", "/wp-admin/setup.php"), LambdaContext())
    roots = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert roots[0].name == "GET /todos/{todoId}"
    assert roots[1].name == "GET"
    assert names.HTTP_ROUTE not in roots[1].attributes


def test_non_http_event(sink: InMemorySender) -> None:
    @traced_handler
    def handler(event, context):
        return "ok"

    handler({"source": "aws.events"}, LambdaContext())
    root = sink.spans[-1]
    assert root.name == "todo-insert"
    assert root.attributes[names.FAAS_TRIGGER] == "other"


def test_exception_is_recorded_and_reraised_unchanged(sink: InMemorySender) -> None:
    class Boom(Exception):
        pass

    original = Boom("database on fire")

    @traced_handler
    def handler(event, context):
        raise original

    with pytest.raises(Boom) as caught:
        handler(http_event("POST", "/todos"), LambdaContext())
    assert caught.value is original
    root = sink.spans[-1]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes[names.ERROR_TYPE].endswith(
        "test_exception_is_recorded_and_reraised_unchanged.<locals>.Boom"
    )
    assert [e.name for e in root.events] == ["exception"]
    assert root.events[0].attributes["exception.message"] == "database on fire"


def test_5xx_response_marks_error(sink: InMemorySender) -> None:
    handler = make_handler(status=503)
    handler(http_event(), LambdaContext())
    root = sink.spans[-1]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 503


def test_4xx_response_is_not_an_error(sink: InMemorySender) -> None:
    handler = make_handler(status=404)
    handler(http_event(), LambdaContext())
    assert sink.spans[-1].status.status_code is StatusCode.UNSET


def test_traced_exception_inside_handler(sink: InMemorySender) -> None:
    @traced("Save Todo")
    def save() -> None:
        raise ValueError("bad")

    @traced_handler
    def handler(event, context):
        try:
            save()
        except ValueError:
            return {"statusCode": 400}
        return {"statusCode": 201}

    assert handler(http_event("POST", "/todos"), LambdaContext()) == {"statusCode": 400}
    save_span = by_name(sink.spans, "Save Todo")
    assert save_span.status.status_code is StatusCode.ERROR
    assert save_span.attributes[names.ERROR_TYPE] == "ValueError"


def test_w3c_traceparent_is_the_parent(sink: InMemorySender) -> None:
    handler = make_handler()
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=value",
    }
    handler(http_event(headers=headers), LambdaContext())
    root = sink.spans[-1]
    assert root.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert root.parent.span_id == 0xB7AD6B7169203331
    assert root.parent.is_remote
    assert root.context.trace_state.get("vendor") == "value"


def test_datadog_headers_are_the_parent(sink: InMemorySender) -> None:
    handler = make_handler()
    headers = {
        "x-datadog-trace-id": "1234567890123456789",
        "x-datadog-parent-id": "987654321",
        "x-datadog-sampling-priority": "1",
        "x-datadog-tags": "_dd.p.tid=66bb1c2e00000000,_dd.p.dm=-0",
    }
    handler(http_event(headers=headers), LambdaContext())
    root = sink.spans[-1]
    assert root.context.trace_id == (0x66BB1C2E00000000 << 64) | 1234567890123456789
    assert root.parent.span_id == 987654321


def test_datadog_drop_priority_is_not_sampled(sink: InMemorySender) -> None:
    handler = make_handler()
    headers = {
        "x-datadog-trace-id": "11",
        "x-datadog-parent-id": "22",
        "x-datadog-sampling-priority": "-1",
    }
    assert handler(http_event(headers=headers), LambdaContext())["statusCode"] == 201
    assert sink.spans == []


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ],
)
def test_invalid_traceparent_starts_a_new_trace(sink: InMemorySender, traceparent: str) -> None:
    handler = make_handler()
    handler(http_event(headers={"traceparent": traceparent}), LambdaContext())
    root = sink.spans[-1]
    assert root.parent is None


def test_provisioned_concurrency_is_not_a_cold_start(
    sink: InMemorySender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "provisioned-concurrency")
    with traced(names.DSQL_CONNECT):
        pass
    handler = make_handler()
    handler(http_event("POST", "/todos"), LambdaContext())
    root = by_name(sink.spans, "POST /todos")
    init = by_name(sink.spans, names.LAMBDA_INIT)
    assert root.attributes[names.FAAS_COLDSTART] is False
    assert root.attributes[names.INIT_TYPE] == "provisioned-concurrency"
    # The init phases are still shown, as a trace of their own.
    assert init.parent is None
    assert init.context.trace_id != root.context.trace_id


def test_proactive_initialisation_is_not_a_cold_start(
    sink: InMemorySender, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.time_ns()]
    coldstart.reset(clock=lambda: now[0])
    handler = make_handler()  # init ends now
    now[0] += 11_000_000_000  # the first invocation comes 11 s later
    handler(http_event("POST", "/todos"), LambdaContext())
    root = by_name(sink.spans, "POST /todos")
    assert root.attributes[names.FAAS_COLDSTART] is False
    assert root.attributes[names.PROACTIVE_INIT] is True


def test_setup_is_idempotent(sink: InMemorySender) -> None:
    rt = runtime.current()
    again = setup_tracing(TracingConfig(service_name="other", exporter="console"))
    assert runtime.current() is rt
    assert again.service_name == "test"
    handler = make_handler()
    handler(http_event(), LambdaContext())
    roots = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert len(roots) == 1
    assert roots[0].resource.attributes[names.SERVICE_NAME] == "test"


def test_wrapping_twice_gives_one_span(sink: InMemorySender) -> None:
    @traced_handler
    @traced_handler(routes=ROUTES)
    def handler(event, context):
        return {"statusCode": 200}

    handler(http_event(), LambdaContext())
    assert len([s for s in sink.spans if s.kind is SpanKind.SERVER]) == 1


def test_disabled_sdk_runs_the_handler_without_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    config = setup_tracing()
    assert config.disabled
    with traced(names.DSQL_CONNECT):  # init work is not recorded either
        pass
    assert coldstart.pending_phases() == ()
    handler = make_handler()
    assert handler(http_event(), LambdaContext())["statusCode"] == 201


def test_handler_works_when_export_fails_and_pauses() -> None:
    sink = InMemorySender()
    clock = FakeClock()
    rt = make_runtime(sink, clock=clock)

    @traced_handler(runtime=rt)
    def handler(event, context):
        return {"statusCode": 201}

    sink.fail = True
    for _ in range(5):
        assert handler(http_event(), LambdaContext())["statusCode"] == 201
    # One failed attempt, then the pause: no more attempts, spans kept for later.
    assert sink.calls == 1
    sink.fail = False
    clock.advance(60)  # the pause is over
    handler(http_event(), LambdaContext())
    assert sink.calls == 2
    roots = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert len(roots) == 6  # nothing lost while the collector was down


def test_toolkit_failure_never_reaches_the_handler(
    sink: InMemorySender, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("toolkit bug")

    monkeypatch.setattr("tracing.handler._describe", broken)
    handler = make_handler()
    assert handler(http_event(), LambdaContext())["statusCode"] == 201


def test_spans_are_delivered_before_return(sink: InMemorySender) -> None:
    delivered_at_return = []

    @traced_handler
    def handler(event, context):
        return {"statusCode": 200}

    for _ in range(3):
        handler(http_event(), LambdaContext())
        delivered_at_return.append(len(sink.spans))
    assert delivered_at_return == [2, 3, 4]  # init + root, then one root each


def test_impending_timeout_ends_and_sends_the_span_before_the_deadline(
    sink: InMemorySender,
) -> None:
    delivered_while_running = []
    slept_until = []

    @traced_handler
    def handler(event, context):
        time.sleep(0.45)  # past the deadline: Lambda would stop the function now
        slept_until.append(time.time_ns())
        delivered_while_running.append(len(sink.spans))
        return {"statusCode": 200}

    context = LambdaContext(deadline_ms=int(time.time() * 1000) + 300)
    handler(http_event(), context)
    root = next(s for s in sink.spans if s.kind is SpanKind.SERVER)
    assert delivered_while_running[0] >= 1  # delivered by the watcher, not by the return
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes[names.ERROR_TYPE] == "timeout"
    # Ended by the watcher at the deadline less the margin, before the handler was done.
    assert root.end_time < slept_until[0]
    assert root.end_time <= context.deadline_ms * 1_000_000
    assert len([s for s in sink.spans if s.kind is SpanKind.SERVER]) == 1  # not sent twice


def test_no_timeout_span_when_the_handler_finishes_in_time(sink: InMemorySender) -> None:
    @traced_handler
    def handler(event, context):
        return {"statusCode": 200}

    watch = runtime.current().watch
    fired = []
    for _ in range(3):
        handler(http_event(), LambdaContext(deadline_ms=int(time.time() * 1000) + 150))
        assert not watch.armed  # disarmed when the handler returned
    # A canary armed after them fires; had the handlers' callbacks stayed armed, they
    # would have fired first and ended their (already ended) spans with an error.
    watch.arm(time.monotonic() + 0.2, lambda: fired.append(True))
    eventually(lambda: fired, timeout=5)
    roots = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert len(roots) == 3
    assert all(r.status.status_code is StatusCode.UNSET for r in roots)
    assert all(names.ERROR_TYPE not in r.attributes for r in roots)


def test_resource_id_names_the_version_not_the_alias(
    sink: InMemorySender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")
    handler = make_handler()
    for qualifier in ("live", "canary"):
        handler(http_event(), LambdaContext(invoked_function_arn=f"{FUNCTION_ARN}:{qualifier}"))
    handler(http_event(), LambdaContext(invoked_function_arn=f"{FUNCTION_ARN}:7"))
    handler(http_event(), LambdaContext())  # unqualified
    roots = [s for s in sink.spans if s.kind is SpanKind.SERVER]
    assert [r.attributes[names.CLOUD_RESOURCE_ID] for r in roots] == [
        f"{FUNCTION_ARN}:7",
        f"{FUNCTION_ARN}:7",
        f"{FUNCTION_ARN}:7",
        FUNCTION_ARN,
    ]
    assert [r.attributes.get(names.INVOKED_ALIAS) for r in roots] == ["live", "canary", None, None]
