"""Function URL requests and responses in the payload 2.0 format, as AWS documents them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from dsqltrace.httpserver import HttpRequest, HttpResponse

_TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-www-form-urlencoded",
    "application/graphql",
)


def _is_text(content_type: str) -> bool:
    ct = content_type.split(";")[0].strip().lower()
    return (
        ct.startswith("text/") or ct in _TEXT_TYPES or ct.endswith("+json") or ct.endswith("+xml")
    )


def _iam_authorizer(authorization: str, account_id: str) -> dict[str, Any] | None:
    """What AWS_IAM auth adds for a SigV4-signed request (the signature is not checked here)."""
    if not authorization.startswith("AWS4-HMAC-SHA256") or "Credential=" not in authorization:
        return None
    access_key = authorization.split("Credential=", 1)[1].split("/", 1)[0]
    return {
        "iam": {
            "accessKey": access_key,
            "accountId": account_id,
            "callerId": "AIDALOCALEMULATOR",
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": f"arn:aws:iam::{account_id}:user/local",
            "userId": "AIDALOCALEMULATOR",
        }
    }


def to_event(
    request: HttpRequest,
    *,
    url_id: str,
    region: str,
    account_id: str = "123456789012",
    request_id: str | None = None,
    now_ms: int | None = None,
) -> dict[str, Any]:
    """The event Lambda gives a function for ``request`` arriving at its Function URL."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers.items():
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
        else:
            headers[name] = value
    domain = f"{url_id}.lambda-url.{region}.on.aws"
    raw_query = request.query
    authorizer = _iam_authorizer(request.headers.get("authorization", ""), account_id)
    context: dict[str, Any] = {
        "accountId": account_id if authorizer else "anonymous",
        "apiId": url_id,
        "authentication": None,
    }
    if authorizer:
        context["authorizer"] = authorizer
    context.update(
        {
            "domainName": domain,
            "domainPrefix": url_id,
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.peer or "127.0.0.1",
                "userAgent": request.headers.get("user-agent", ""),
            },
            "requestId": request_id or str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now_ms / 1000)),
            "timeEpoch": now_ms,
        }
    )
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    event["requestContext"] = context
    encoded = False
    if request.body:
        text = None
        if _is_text(request.headers.get("content-type", "")):
            try:
                text = request.body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        encoded = text is None
        event["body"] = text if text is not None else base64.b64encode(request.body).decode()
    event["pathParameters"] = None
    event["isBase64Encoded"] = encoded
    event["stageVariables"] = None
    return event


def from_result(payload: bytes) -> HttpResponse:
    """The HTTP response for what the function returned.

    An object with ``statusCode`` is a response (``headers``, ``cookies``,
    ``body``, ``isBase64Encoded``); anything else is a 200 whose JSON body is
    the returned value.
    """
    try:
        result = json.loads(payload) if payload else None
    except ValueError:
        return HttpResponse(
            502, b'{"Message":"Internal Server Error"}', [("Content-Type", "application/json")]
        )
    if isinstance(result, dict) and "statusCode" in result:
        try:
            status = int(result["statusCode"])
        except (TypeError, ValueError):
            return HttpResponse(
                502, b'{"Message":"Internal Server Error"}', [("Content-Type", "application/json")]
            )
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        headers += [("Set-Cookie", str(c)) for c in result.get("cookies") or []]
        body = result.get("body")
        data = b""
        if isinstance(body, str):
            data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        elif body is not None:
            data = json.dumps(body).encode()
        if data and not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
        return HttpResponse(status, data, headers)
    return HttpResponse(200, json.dumps(result).encode(), [("Content-Type", "application/json")])
