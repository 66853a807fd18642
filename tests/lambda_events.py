"""Lambda inputs for tests: payload 2.0 events and a context object shaped like the runtime's."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:todo-insert"


@dataclass
class LambdaContext:
    """The attributes of awslambdaric's LambdaContext that handlers read."""

    function_name: str = "todo-insert"
    function_version: str = "$LATEST"
    invoked_function_arn: str = FUNCTION_ARN
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/todo-insert"
    log_stream_name: str = "2026/11/27/[$LATEST]abc"
    deadline_ms: int = field(default_factory=lambda: int(time.time() * 1000) + 30_000)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


def http_event(
    method: str = "GET",
    path: str = "/todos",
    *,
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
    query: str = "",
    route_key: str = "$default",
) -> dict[str, Any]:
    """A Function URL (payload 2.0) event as AWS documents it (``userAgent`` is the
    request's ``user-agent`` header, as AWS fills it)."""
    all_headers = {
        "host": "abc.lambda-url.us-east-1.on.aws",
        "user-agent": "pytest",
        **(headers or {}),
    }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": all_headers["user-agent"],
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "time": "27/Nov/2026:14:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(
            part.split("=", 1) if "=" in part else (part, "") for part in query.split("&")
        )
    if body is not None:
        if isinstance(body, bytes):
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
        else:
            event["body"] = body
    return event
