"""The emulator's Function URL events against AWS's documented payload 2.0 sample."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from dsqltrace.emulator.events import from_result, to_event
from dsqltrace.httpserver import HttpRequest

# The request-payload sample of the Lambda developer guide ("Invoking Lambda function URLs").
SAMPLE = json.loads((Path(__file__).parent / "data/function_url_request.json").read_text())


def sample_request() -> HttpRequest:
    """The HTTP request the documented sample describes."""
    return HttpRequest(
        method="POST",
        target="/my/path?parameter1=value1&parameter1=value2&parameter2=value",
        headers={
            "header1": "value1",
            "header2": "value1,value2",
            "cookie": "cookie1; cookie2",
            "user-agent": "agent",
            "content-type": "text/plain",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIA.../20200312/us-west-2/lambda/aws4_request, "
            "SignedHeaders=host, Signature=abc",
        },
        body=b"Hello from client!",
        peer="123.123.123.123",
    )


def test_event_matches_the_documented_sample_field_by_field() -> None:
    event = to_event(
        sample_request(),
        url_id="<url-id>",
        region="us-west-2",
        account_id="111122223333",
        request_id="id",
        now_ms=1583348638390,
    )
    assert list(event) == list(SAMPLE)  # the same fields, in the same order
    for key in SAMPLE:
        if key in ("headers", "requestContext"):
            continue
        assert event[key] == SAMPLE[key], key
    # Headers: the sample's are there as sent; the request's own (user-agent...) are kept too.
    for name, value in SAMPLE["headers"].items():
        assert event["headers"][name] == value
    assert "cookie" not in event["headers"]
    ours, theirs = event["requestContext"], SAMPLE["requestContext"]
    assert list(ours) == list(theirs)
    for key in theirs:
        if key in ("accountId", "apiId", "authorizer", "time"):
            continue
        assert ours[key] == theirs[key], key
    # The documented sample's "time" (12 Mar) does not match its own timeEpoch (4 Mar 2020,
    # 19:03:58 UTC); ours is derived from timeEpoch, in the same format.
    assert ours["time"] == "04/Mar/2020:19:03:58 +0000"
    assert ours["time"][2:] == theirs["time"][2:]
    assert ours["apiId"] == "<url-id>"
    assert ours["accountId"] == "111122223333"
    assert list(ours["authorizer"]["iam"]) == list(theirs["authorizer"]["iam"])
    assert ours["authorizer"]["iam"]["accessKey"] == "AKIA..."


def test_unsigned_request_has_no_authorizer_and_binary_bodies_are_base64() -> None:
    request = HttpRequest("PUT", "/x", {"content-type": "application/octet-stream"}, b"\x00\xff")
    event = to_event(request, url_id="u", region="us-east-1")
    assert "authorizer" not in event["requestContext"]
    assert event["requestContext"]["accountId"] == "anonymous"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\xff"
    assert "queryStringParameters" not in event and "cookies" not in event
    empty = to_event(HttpRequest("GET", "/", {}, b""), url_id="u", region="us-east-1")
    assert "body" not in empty and empty["isBase64Encoded"] is False


def test_results_become_responses() -> None:
    full = from_result(
        json.dumps(
            {
                "statusCode": 201,
                "headers": {"location": "/todos/1", "content-type": "application/json"},
                "cookies": ["a=1", "b=2"],
                "body": '{"id": 1}',
            }
        ).encode()
    )
    assert full.status == 201
    assert ("location", "/todos/1") in full.headers
    assert [v for k, v in full.headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert full.body == b'{"id": 1}'
    binary = from_result(
        json.dumps(
            {"statusCode": 200, "body": base64.b64encode(b"\x01").decode(), "isBase64Encoded": True}
        ).encode()
    )
    assert binary.body == b"\x01"
    inferred = from_result(b'{"message": "hi"}')
    assert inferred.status == 200 and json.loads(inferred.body) == {"message": "hi"}
    assert from_result(b"not json").status == 502
