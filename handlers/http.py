"""Function URL events (payload 2.0) in, Lambda proxy responses out, and JSON errors.

Every error body has one shape: ``{"error": {"code": ..., "message": ..., "field": ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_BODY_BYTES",
    "HttpError",
    "Request",
    "Response",
    "Router",
    "bad_request",
    "error_response",
    "parse_event",
]


MAX_BODY_BYTES = 64 * 1024


class HttpError(Exception):
    """An error answered with ``status`` and the JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return error_response(
            self.status, self.code, self.message, field=self.field, headers=self.headers
        )


def bad_request(
    message: str, *, field: str | None = None, code: str = "invalid_request"
) -> HttpError:
    return HttpError(400, code, message, field=field)


@dataclass
class Request:
    """What the handlers need of a Function URL request."""

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    raw_body: str | None
    is_base64: bool
    path_params: dict[str, str] = field(default_factory=dict)
    #: ``time.monotonic()`` by which the work must be done (the invocation's deadline).
    deadline: float | None = None

    def body_bytes(self) -> bytes:
        """The body as bytes (base64 decoded); 400 if it does not decode, 413 if too large."""
        raw = self.raw_body
        if raw is None:
            return b""
        if len(raw) > MAX_BODY_BYTES * 4 // 3 + 4:
            raise HttpError(413, "payload_too_large", f"body is over {MAX_BODY_BYTES} bytes")
        if self.is_base64:
            try:
                data = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise bad_request("body is marked base64 but does not decode") from None
        else:
            data = raw.encode("utf-8", "surrogatepass")
        if len(data) > MAX_BODY_BYTES:
            raise HttpError(413, "payload_too_large", f"body is over {MAX_BODY_BYTES} bytes")
        return data

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; 400 for anything else."""
        data = self.body_bytes()
        if not data.strip():
            raise bad_request("body is required: a JSON object", code="invalid_json")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("body is not valid UTF-8", code="invalid_json") from None
        try:
            value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except _DuplicateKey as dup:
            raise bad_request(
                f"duplicate field {dup.key!r}", field=dup.key, code="invalid_json"
            ) from None
        except (ValueError, RecursionError) as exc:
            message = exc.msg if isinstance(exc, json.JSONDecodeError) else "too deeply nested"
            raise bad_request(f"body is not valid JSON: {message}", code="invalid_json") from None
        if not isinstance(value, dict):
            raise bad_request("body must be a JSON object", code="invalid_json")
        return value


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_event(event: Any) -> Request:
    """A :class:`Request` from a payload 2.0 event; 400 for an event that is not one."""
    if not isinstance(event, Mapping):
        raise bad_request("event is not an HTTP request")
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, Mapping) else None
    if not isinstance(http, Mapping):
        raise bad_request("event is not an HTTP request")
    raw_headers = event.get("headers") or {}
    headers = (
        {str(k).lower(): str(v) for k, v in raw_headers.items()}
        if isinstance(raw_headers, Mapping)
        else {}
    )
    raw_query = event.get("queryStringParameters") or {}
    query = {str(k): str(v) for k, v in raw_query.items()} if isinstance(raw_query, Mapping) else {}
    body = event.get("body")
    return Request(
        method=str(http.get("method", "GET")).upper(),
        path=str(http.get("path") or event.get("rawPath") or "/"),
        headers=headers,
        query=query,
        raw_body=body if isinstance(body, str) else None,
        is_base64=bool(event.get("isBase64Encoded")),
    )


@dataclass
class Response:
    """A Lambda proxy response."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def to_lambda(self) -> dict[str, Any]:
        headers = dict(self.headers)
        result: dict[str, Any] = {"statusCode": self.status, "headers": headers}
        if self.body is not None:
            headers.setdefault("content-type", "application/json")
            result["body"] = json.dumps(self.body, ensure_ascii=False, separators=(",", ":"))
        return result


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return Response(status, {"error": error}, dict(headers or {}))


Handler = Callable[[Request], Response]


class Router:
    """Route templates (``/todos/{id}``) to handlers per method; 404 and 405 with ``Allow``."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], dict[str, Handler]]] = []

    def add(self, method: str, template: str, handler: Handler) -> None:
        for existing, _, methods in self._routes:
            if existing == template:
                methods[method] = handler
                return
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        self._routes.append((template, re.compile(regex + "/?"), {method: handler}))

    @property
    def templates(self) -> list[str]:
        return [template for template, _, _ in self._routes]

    def dispatch(self, request: Request) -> Response:
        for _, pattern, methods in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allow = ", ".join(sorted(methods))
                raise HttpError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here; allowed: {allow}",
                    headers={"allow": allow},
                )
            request.path_params = match.groupdict()
            return handler(request)
        raise HttpError(404, "not_found", f"no route for {request.path}")
