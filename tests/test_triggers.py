"""Triggers beyond Function URLs: each documented AWS event (tests/events/) through the
real handler wrapper, into the SDK's spans."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from tests.lambda_events import LambdaContext
from tracing import names, traced, traced_handler
from tracing.testing import InMemorySender
from tracing.triggers import MAX_LINKS

EVENTS = Path(__file__).parent / "events"
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def event(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def invoke(sink: InMemorySender, payload: Any, result: Any = None, routes=("/lambda",)):
    @traced("work")
    def work() -> None:
        pass

    @traced_handler(routes=list(routes))
    def handler(event, context):
        work()
        return result

    handler(payload, LambdaContext())
    root = [s for s in sink.spans if s.parent is None or s.name != "work"][-1]
    child = [s for s in sink.spans if s.name == "work"][-1]
    assert child.parent is not None and child.parent.span_id == root.context.span_id
    return root


def test_rest_api_span_uses_the_resource_template(sink: InMemorySender) -> None:
    payload = event("apigw-rest")
    payload["multiValueHeaders"]["traceparent"] = [TRACEPARENT]
    root = invoke(sink, payload, {"statusCode": 200, "body": "{}"})
    assert root.name == "GET /todos/{id}" and root.kind is SpanKind.SERVER
    attrs = root.attributes
    assert attrs[names.FAAS_TRIGGER] == "http"
    assert attrs[names.HTTP_ROUTE] == "/todos/{id}"
    assert attrs[names.URL_PATH] == "/todos/42"
    assert attrs[names.HTTP_REQUEST_METHOD] == "GET"
    assert attrs[names.HTTP_RESPONSE_STATUS_CODE] == 200
    assert attrs[names.CLIENT_ADDRESS] == "127.0.0.1"
    assert attrs[names.USER_AGENT_ORIGINAL] == "Custom User Agent String"
    # The context came from a multi-value header only.
    assert f"{root.context.trace_id:032x}" == TRACE
    assert f"{root.parent.span_id:016x}" == PARENT


def test_rest_api_headers_are_case_insensitive(sink: InMemorySender) -> None:
    payload = event("apigw-rest")
    payload["headers"]["TraceParent"] = TRACEPARENT
    root = invoke(sink, payload, {"statusCode": 503})
    assert f"{root.context.trace_id:032x}" == TRACE
    assert root.attributes[names.ERROR_TYPE] == "503"


def test_http_api_payload_1_0(sink: InMemorySender) -> None:
    root = invoke(sink, event("apigw-http-v1"), {"statusCode": 201})
    assert root.name == "GET /my/path"
    assert root.attributes[names.HTTP_ROUTE] == "/my/path"
    assert root.attributes[names.CLIENT_ADDRESS] == "192.0.2.1"
    assert root.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 201


def test_alb_route_comes_from_the_routes_table(sink: InMemorySender) -> None:
    root = invoke(sink, event("alb"), {"statusCode": 200}, routes=["/lambda"])
    assert root.name == "GET /lambda" and root.kind is SpanKind.SERVER
    assert root.attributes[names.FAAS_TRIGGER] == "http"
    assert root.attributes[names.CLIENT_ADDRESS] == "72.12.164.125"
    unmatched = invoke(sink, event("alb"), {"statusCode": 404}, routes=["/other"])
    assert unmatched.name == "GET" and names.HTTP_ROUTE not in unmatched.attributes


def test_alb_multi_value_headers(sink: InMemorySender) -> None:
    payload = event("alb")
    headers = payload.pop("headers")
    payload["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    payload["multiValueHeaders"]["traceparent"] = [TRACEPARENT, "00-ffff"]
    root = invoke(sink, payload, {"statusCode": 200})
    assert f"{root.context.trace_id:032x}" == TRACE


def _sqs_with_contexts() -> tuple[dict[str, Any], list[str]]:
    """The documented two-message batch, one message with each kind of context."""
    payload = event("sqs")
    first, second = payload["Records"]
    first["messageAttributes"]["traceparent"] = {"stringValue": TRACEPARENT, "dataType": "String"}
    second["attributes"]["AWSTraceHeader"] = (
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    return payload, [TRACE, "5759e988bd862e3fe1be46a994272793"]


def test_sqs_batch_is_a_consumer_span_linked_to_each_message(sink: InMemorySender) -> None:
    payload, traces = _sqs_with_contexts()
    result = {"batchItemFailures": [{"itemIdentifier": "2e1424d4-f796-459a-8184-9c92662be6da"}]}
    root = invoke(sink, payload, result)
    assert root.name == "my-queue process" and root.kind is SpanKind.CONSUMER
    attrs = root.attributes
    assert attrs[names.FAAS_TRIGGER] == "pubsub"
    assert attrs[names.MESSAGING_SYSTEM] == "aws_sqs"
    assert attrs[names.MESSAGING_DESTINATION_NAME] == "my-queue"
    assert attrs[names.MESSAGING_OPERATION_TYPE] == "process"
    assert attrs[names.MESSAGING_BATCH_MESSAGE_COUNT] == 2
    assert attrs[names.BATCH_ITEM_FAILURES] == 1
    assert names.HTTP_RESPONSE_STATUS_CODE not in attrs
    assert [f"{link.context.trace_id:032x}" for link in root.links] == traces
    assert (
        root.links[0].attributes[names.MESSAGING_MESSAGE_ID] == payload["Records"][0]["messageId"]
    )
    assert root.parent is None  # a batch starts its own trace; the messages are links


def test_sqs_single_message_is_also_the_parent(sink: InMemorySender) -> None:
    payload, _ = _sqs_with_contexts()
    payload["Records"] = payload["Records"][:1]
    root = invoke(sink, payload, None)
    assert f"{root.context.trace_id:032x}" == TRACE
    assert len(root.links) == 1
    assert root.attributes[names.MESSAGING_MESSAGE_ID] == payload["Records"][0]["messageId"]
    assert names.BATCH_ITEM_FAILURES not in root.attributes  # no partial batch response


def test_sqs_datadog_attribute_string_and_binary(sink: InMemorySender) -> None:
    payload = event("sqs")
    dd = json.dumps({"x-datadog-trace-id": "1234567890", "x-datadog-parent-id": "987654321"})
    payload["Records"][0]["messageAttributes"]["_datadog"] = {
        "stringValue": dd,
        "dataType": "String",
    }
    payload["Records"][1]["messageAttributes"]["_datadog"] = {
        "binaryValue": base64.b64encode(dd.encode()).decode(),
        "dataType": "Binary",
    }
    root = invoke(sink, payload, None)
    assert [link.context.trace_id for link in root.links] == [1234567890, 1234567890]
    assert [link.context.span_id for link in root.links] == [987654321, 987654321]


def test_sns_to_sqs_fan_out_reads_the_envelope(sink: InMemorySender) -> None:
    sns = event("sns")["Records"][0]["Sns"]
    sns["MessageAttributes"]["traceparent"] = {"Type": "String", "Value": TRACEPARENT}
    payload = event("sqs")
    payload["Records"] = payload["Records"][:1]
    payload["Records"][0]["body"] = json.dumps(sns)
    root = invoke(sink, payload, None)
    assert root.kind is SpanKind.CONSUMER
    assert f"{root.links[0].context.trace_id:032x}" == TRACE


def test_sqs_from_several_queues_and_links_bounded(sink: InMemorySender) -> None:
    payload, _ = _sqs_with_contexts()
    template = payload["Records"][0]
    records = []
    for i in range(MAX_LINKS + 50):
        record = copy.deepcopy(template)
        record["messageId"] = f"m{i}"
        record["eventSourceARN"] = f"arn:aws:sqs:us-east-2:123456789012:queue-{i % 2}"
        records.append(record)
    payload["Records"] = records
    root = invoke(sink, payload, None)
    assert root.name == "multiple_sources process"
    assert root.attributes[names.MESSAGING_BATCH_MESSAGE_COUNT] == MAX_LINKS + 50
    assert len(root.links) == MAX_LINKS


def test_sns_notification(sink: InMemorySender) -> None:
    payload = event("sns")
    payload["Records"][0]["Sns"]["MessageAttributes"]["traceparent"] = {
        "Type": "String",
        "Value": TRACEPARENT,
    }
    root = invoke(sink, payload, None)
    assert root.name == "sns-lambda process" and root.kind is SpanKind.CONSUMER
    assert root.attributes[names.MESSAGING_SYSTEM] == "aws.sns"
    assert root.attributes[names.MESSAGING_DESTINATION_NAME] == "sns-lambda"
    assert root.attributes[names.MESSAGING_MESSAGE_ID] == "95df01b4-ee98-5cb9-9903-4c221d41eb5e"
    assert f"{root.parent.span_id:016x}" == PARENT


def test_sns_without_context_starts_a_trace(sink: InMemorySender) -> None:
    root = invoke(sink, event("sns"), None)
    assert root.parent is None and root.name == "sns-lambda process"


def test_eventbridge_event_context_in_detail(sink: InMemorySender) -> None:
    payload = event("eventbridge")
    payload["detail"]["traceparent"] = TRACEPARENT
    root = invoke(sink, payload, None)
    assert root.name == "aws.ec2 process" and root.kind is SpanKind.CONSUMER
    assert root.attributes[names.FAAS_TRIGGER] == "pubsub"
    assert root.attributes[names.MESSAGING_SYSTEM] == "aws.eventbridge"
    assert f"{root.context.trace_id:032x}" == TRACE


def test_scheduled_event_is_a_timer(sink: InMemorySender) -> None:
    root = invoke(sink, event("scheduled"), None)
    assert root.name == LambdaContext().function_name and root.kind is SpanKind.SERVER
    assert root.attributes[names.FAAS_TRIGGER] == "timer"
    assert root.attributes[names.FAAS_TIME] == "2019-03-01T01:23:45Z"


def test_function_url_fixture(sink: InMemorySender) -> None:
    root = invoke(sink, event("function-url"), {"statusCode": 200}, routes=["/my/path"])
    assert root.name == "POST /my/path"
    assert root.attributes[names.CLIENT_ADDRESS] == "123.123.123.123"


@pytest.mark.parametrize(
    "payload",
    [
        {"Records": [{"eventSource": "aws:sqs", "messageAttributes": "x", "attributes": []}]},
        {"Records": [{"eventSource": "aws:sqs", "attributes": {"AWSTraceHeader": "Root=1-x"}}]},
        {"Records": [{"EventSource": "aws:sns", "Sns": None}]},
        {
            "Records": [
                {
                    "eventSource": "aws:sqs",
                    "messageAttributes": {"_datadog": {"binaryValue": "!!notbase64"}},
                    "body": '{"TopicArn": 1, "MessageAttributes": [',
                }
            ]
        },
        {"detail-type": 3, "source": None, "detail": []},
        {"requestContext": {"elb": {}}, "httpMethod": None, "headers": None},
        {"requestContext": {}, "httpMethod": "GET", "multiValueHeaders": {"a": None}},
        {"Records": []},
        {"Records": ["x"]},
    ],
    ids=[
        "sqs bad attributes",
        "bad x-ray",
        "sns none",
        "bad datadog and envelope",
        "eventbridge bad",
        "alb bad",
        "rest bad",
        "no records",
        "record not a dict",
    ],
)
def test_malformed_events_still_get_one_span(sink: InMemorySender, payload) -> None:
    root = invoke(sink, payload, None)
    assert root.end_time is not None
    assert not [link for link in root.links if link.context.trace_id == 0]


def test_events_and_results_that_are_mappings_but_not_dicts(sink: InMemorySender) -> None:
    """Dicts take a fast path past the ABC check; any other Mapping is read the same."""
    from types import MappingProxyType

    payload = event("function-url")
    payload["requestContext"] = MappingProxyType(
        {**payload["requestContext"], "http": MappingProxyType(payload["requestContext"]["http"])}
    )
    root = invoke(sink, MappingProxyType(payload), MappingProxyType({"statusCode": 201}))
    assert root.attributes[names.FAAS_TRIGGER] == "http"
    assert root.attributes[names.HTTP_REQUEST_METHOD] == payload["requestContext"]["http"]["method"]
    assert root.attributes[names.HTTP_RESPONSE_STATUS_CODE] == 201
