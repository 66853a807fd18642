"""What invoked the function, read from the event's shape: the invocation span's name,
kind and attributes, the context of its parent and the contexts it links to.

Recognised, in the order they are tried (a few dictionary lookups decide):

============================  ==========  ==================================  ==============
event                         span kind   span name                           ``faas.trigger``
============================  ==========  ==================================  ==============
Function URL, HTTP API 2.0    SERVER      ``{METHOD} {route}``                ``http``
API Gateway REST, HTTP 1.0    SERVER      ``{METHOD} {resource template}``    ``http``
ALB target group              SERVER      ``{METHOD} {route}`` (``routes``)   ``http``
SQS batch                     CONSUMER    ``{queue} process``                 ``pubsub``
SNS notification              CONSUMER    ``{topic} process``                 ``pubsub``
EventBridge event             CONSUMER    ``{source} process``                ``pubsub``
EventBridge schedule          SERVER      the function's name                 ``timer``
anything else                 SERVER      the function's name                 ``other``
============================  ==========  ==================================  ==============

Trace context, and where producers put it (the convention this toolkit reads
and documents; the first one found wins):

- HTTP: the ``traceparent``/``tracestate`` headers, else Datadog's
  ``x-datadog-*`` headers (multi-value headers too).
- SQS: each message's ``traceparent`` message attribute, else its ``_datadog``
  message attribute (JSON, as ddtrace writes it), else the ``AWSTraceHeader``
  system attribute (X-Ray's, converted to W3C ids).  A message that came from
  SNS without raw delivery carries SNS's envelope as its body: its
  ``MessageAttributes`` are read the same way.  Every message's context is a
  link of the batch span (at most :data:`MAX_LINKS`); a batch of one message
  also takes it as parent.
- SNS: the ``traceparent`` (or ``_datadog``) message attribute: the parent.
- EventBridge: ``traceparent``/``tracestate`` (or ``_datadog``) at the top of
  ``detail``: the parent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from opentelemetry.trace import SpanKind
from opentelemetry.util import types

from tracing import names

__all__ = [
    "MAX_LINKS",
    "Carrier",
    "RouteTable",
    "Trigger",
    "batch_failures",
    "describe",
    "is_mapping",
]

#: Links kept on a batch span: the OpenTelemetry SDK's default span limit.
MAX_LINKS = 128
#: A ``_datadog`` attribute or SNS envelope longer than this is not parsed.
_MAX_CONTEXT_JSON = 8192
_MAX_SNS_BODY = 256 * 1024

#: Trace context headers (lower-case keys), as :func:`tracing.propagation.extract` reads them.
Carrier = Mapping[str, str]


class RouteTable:
    """Matches request paths against route templates such as ``/todos/{id}``."""

    def __init__(self, routes: Iterable[str]) -> None:
        self._exact: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for route in routes:
            if "{" in route:
                regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(route))
                self._patterns.append((re.compile(regex + "/?"), route))
            else:
                self._exact[route.rstrip("/") or "/"] = route

    def match(self, path: str) -> str | None:
        """The template ``path`` matches, or None."""
        route = self._exact.get(path.rstrip("/") or "/")
        if route is not None:
            return route
        for pattern, template in self._patterns:
            if pattern.fullmatch(path):
                return template
        return None


class Trigger:
    """The invocation span as the event describes it.

    ``parent`` is the parent's context if the event carries one; ``links`` the
    contexts to link to, each with the link's attributes (SQS messages);
    ``http`` says the result is an HTTP response (``statusCode``), ``batch``
    that it may report partial batch failures (``batchItemFailures``).
    """

    # A plain class: a dataclass costs about half a millisecond of import (cold start).
    __slots__ = ("attributes", "batch", "http", "kind", "links", "name", "parent")

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, types.AttributeValue],
        *,
        parent: Carrier | None = None,
        links: list[tuple[Carrier, dict[str, types.AttributeValue]]] | None = None,
        http: bool = False,
        batch: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.parent = parent
        self.links = links or []
        self.http = http
        self.batch = batch


def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, with the usual case (a dict) first: an event's
    shape is checked several times per invocation, and the ABC's check is slow."""
    return type(value) is dict or isinstance(value, Mapping)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if is_mapping(value) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _base(function: str, trigger: str) -> dict[str, types.AttributeValue]:
    return {
        names.DD_OPERATION_NAME: names.OPERATION_LAMBDA,
        names.FAAS_TRIGGER: trigger,
        names.DD_RESOURCE_NAME: function,
    }


def describe(event: Any, table: RouteTable, function: str) -> Trigger:
    """The trigger of an invocation of ``function`` with ``event`` (never raises on shape)."""
    if is_mapping(event):
        context = event.get("requestContext")
        if is_mapping(context):
            if is_mapping(context.get("http")):
                return _http_v2(event, context, table, function)
            if is_mapping(context.get("elb")):
                return _http_v1(event, context, table, function, alb=True)
            if "httpMethod" in event:
                return _http_v1(event, context, table, function, alb=False)
        records = event.get("Records")
        if isinstance(records, list) and records and is_mapping(records[0]):
            first = records[0]
            source = first.get("eventSource") or first.get("EventSource")
            if source == "aws:sqs":
                return _sqs(records, function)
            if source == "aws:sns":
                return _sns(first, function)
        if "detail-type" in event and "source" in event:
            return _eventbridge(event, function)
    return Trigger(function, SpanKind.SERVER, _base(function, "other"))


# --- HTTP ---------------------------------------------------------------------------
def _http(
    method: Any,
    path: Any,
    route: str | None,
    headers: dict[str, str],
    agent: Any,
    client: Any,
    function: str,
) -> Trigger:
    method = method.upper() if isinstance(method, str) and method else "GET"
    path = path if isinstance(path, str) and path else "/"
    name = f"{method} {route}" if route else method
    attrs: dict[str, types.AttributeValue] = {
        names.DD_OPERATION_NAME: names.OPERATION_LAMBDA,
        names.FAAS_TRIGGER: "http",
        names.DD_RESOURCE_NAME: name,
        names.HTTP_REQUEST_METHOD: method,
        names.URL_PATH: path,
        names.DD_SPAN_TYPE: "serverless",
    }
    if route:
        attrs[names.HTTP_ROUTE] = route
    agent = _str(agent) or headers.get("user-agent")
    if agent:
        attrs[names.USER_AGENT_ORIGINAL] = agent
    if isinstance(client, str) and client:
        attrs[names.CLIENT_ADDRESS] = client
    return Trigger(name, SpanKind.SERVER, attrs, parent=headers, http=True)


def _http_v2(
    event: Mapping[str, Any], context: Mapping[str, Any], table: RouteTable, function: str
) -> Trigger:
    http = context["http"]
    headers = {k: v for k, v in _mapping(event.get("headers")).items() if isinstance(v, str)}
    path = http.get("path") or event.get("rawPath")
    route_key = event.get("routeKey")
    route: str | None = None
    if isinstance(route_key, str) and " " in route_key:
        route = route_key.split(" ", 1)[1]
    if route is None or route == "$default":
        route = table.match(path) if isinstance(path, str) and path else None
    return _http(
        http.get("method"),
        path,
        route,
        headers,
        http.get("userAgent"),
        http.get("sourceIp"),
        function,
    )


def _headers_v1(event: Mapping[str, Any]) -> dict[str, str]:
    """Lower-case headers of a payload 1.0 or ALB event: ``headers``, else the first of
    each ``multiValueHeaders`` entry (the two are sent together, or one of them)."""
    headers: dict[str, str] = {}
    for key, values in _mapping(event.get("multiValueHeaders")).items():
        if isinstance(key, str) and isinstance(values, list) and values:
            first = values[0]
            if isinstance(first, str):
                headers[key.lower()] = first
    for key, value in _mapping(event.get("headers")).items():
        if isinstance(key, str) and isinstance(value, str):
            headers[key.lower()] = value
    return headers


def _http_v1(
    event: Mapping[str, Any],
    context: Mapping[str, Any],
    table: RouteTable,
    function: str,
    *,
    alb: bool,
) -> Trigger:
    headers = _headers_v1(event)
    path = event.get("path")
    route: str | None = None
    if not alb:  # API Gateway names the resource template the request matched
        resource = event.get("resource") or context.get("resourcePath")
        if isinstance(resource, str) and resource.startswith("/"):
            route = resource
    if route is None and isinstance(path, str) and path:
        route = table.match(path)
    identity = _mapping(context.get("identity"))
    client = identity.get("sourceIp")
    if alb:  # the load balancer puts the client first in X-Forwarded-For
        client = headers.get("x-forwarded-for", "").split(",", 1)[0].strip()
    return _http(
        event.get("httpMethod"), path, route, headers, identity.get("userAgent"), client, function
    )


# --- Messaging ------------------------------------------------------------------------
def _messaging(
    system: str,
    destination: str | None,
    count: int | None,
    function: str,
) -> tuple[str, dict[str, types.AttributeValue]]:
    name = f"{destination or 'unknown'} process"
    attrs = _base(function, "pubsub")
    attrs.update(
        {
            names.DD_RESOURCE_NAME: name,
            names.MESSAGING_SYSTEM: system,
            names.MESSAGING_OPERATION_TYPE: "process",
            names.MESSAGING_OPERATION_NAME: "process",
        }
    )
    if destination:
        attrs[names.MESSAGING_DESTINATION_NAME] = destination
    if count is not None:
        attrs[names.MESSAGING_BATCH_MESSAGE_COUNT] = count
    return name, attrs


def _arn_name(arn: Any) -> str | None:
    """The resource name at the end of an ARN (a queue's, a topic's)."""
    if not isinstance(arn, str) or arn.count(":") < 5:
        return None
    return arn.rsplit(":", 1)[1] or None


def _json(text: Any, limit: int) -> Mapping[str, Any]:
    if not isinstance(text, str) or not text.startswith("{") or len(text) > limit:
        return {}
    import json  # only for the events that carry JSON context

    try:
        return _mapping(json.loads(text))
    except ValueError:
        return {}


def _datadog(value: Any, binary: Any = None) -> Carrier | None:
    """Datadog's ``_datadog`` context (JSON text, or base64 of it), as a carrier."""
    if binary is not None and value is None:
        if not isinstance(binary, str) or len(binary) > _MAX_CONTEXT_JSON:
            return None
        import base64
        import binascii

        try:
            value = base64.b64decode(binary, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    carrier = {
        k.lower(): v for k, v in _json(value, _MAX_CONTEXT_JSON).items() if isinstance(v, str)
    }
    return carrier or None


def _xray(header: Any) -> Carrier | None:
    """X-Ray's ``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`` as W3C ids."""
    if not isinstance(header, str) or len(header) > 256:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in header.split(";"))
    root = fields.get("Root", "").split("-")
    parent = fields.get("Parent", "")
    if len(root) != 3 or root[0] != "1" or len(root[1]) != 8 or len(root[2]) != 24:
        return None
    flags = "01" if fields.get("Sampled") == "1" else "00"
    return {"traceparent": f"00-{root[1]}{root[2]}-{parent}-{flags}"}


def _from_attributes(attributes: Mapping[str, Any], value_key: str) -> Carrier | None:
    """Context from message attributes: SQS's ``stringValue``, SNS's ``Value``."""
    traceparent = _str(_mapping(attributes.get("traceparent")).get(value_key))
    if traceparent:
        carrier = {"traceparent": traceparent}
        state = _str(_mapping(attributes.get("tracestate")).get(value_key))
        if state:
            carrier["tracestate"] = state
        return carrier
    dd = attributes.get("_datadog")
    if is_mapping(dd):
        if value_key == "Value":  # SNS: Type String or Binary, the value in Value
            kind = dd.get("Type")
            raw = dd.get("Value")
            return _datadog(None, raw) if kind == "Binary" else _datadog(raw)
        return _datadog(dd.get("stringValue"), dd.get("binaryValue"))
    return None


def _sqs_context(record: Mapping[str, Any]) -> Carrier | None:
    carrier = _from_attributes(_mapping(record.get("messageAttributes")), "stringValue")
    if carrier:
        return carrier
    body = record.get("body")
    if isinstance(body, str) and body.startswith("{") and '"TopicArn"' in body[:4096]:
        envelope = _json(body, _MAX_SNS_BODY)  # SNS to SQS, without raw delivery
        carrier = _from_attributes(_mapping(envelope.get("MessageAttributes")), "Value")
        if carrier:
            return carrier
    return _xray(_mapping(record.get("attributes")).get("AWSTraceHeader"))


def _sqs(records: list[Any], function: str) -> Trigger:
    queues = {_arn_name(_mapping(r).get("eventSourceARN")) for r in records[:MAX_LINKS]}
    queue = queues.pop() if len(queues) == 1 else "multiple_sources"
    name, attrs = _messaging("aws_sqs", queue, len(records), function)
    links: list[tuple[Carrier, dict[str, types.AttributeValue]]] = []
    for record in records[:MAX_LINKS]:
        record = _mapping(record)
        carrier = _sqs_context(record)
        if carrier:
            link_attrs: dict[str, types.AttributeValue] = {}
            message_id = _str(record.get("messageId"))
            if message_id:
                link_attrs[names.MESSAGING_MESSAGE_ID] = message_id
            links.append((carrier, link_attrs))
    if len(records) == 1:
        message_id = _str(_mapping(records[0]).get("messageId"))
        if message_id:
            attrs[names.MESSAGING_MESSAGE_ID] = message_id
    parent = links[0][0] if len(records) == 1 and links else None
    return Trigger(name, SpanKind.CONSUMER, attrs, parent=parent, links=links, batch=True)


def _sns(record: Mapping[str, Any], function: str) -> Trigger:
    sns = _mapping(record.get("Sns"))
    name, attrs = _messaging("aws.sns", _arn_name(sns.get("TopicArn")), None, function)
    message_id = _str(sns.get("MessageId"))
    if message_id:
        attrs[names.MESSAGING_MESSAGE_ID] = message_id
    parent = _from_attributes(_mapping(sns.get("MessageAttributes")), "Value")
    return Trigger(name, SpanKind.CONSUMER, attrs, parent=parent)


def _eventbridge(event: Mapping[str, Any], function: str) -> Trigger:
    source = _str(event.get("source"))
    if event.get("detail-type") == "Scheduled Event" and source == "aws.events":
        attrs = _base(function, "timer")
        time = _str(event.get("time"))
        if time:
            attrs[names.FAAS_TIME] = time
        return Trigger(function, SpanKind.SERVER, attrs)
    name, attrs = _messaging("aws.eventbridge", source, None, function)
    event_id = _str(event.get("id"))
    if event_id:
        attrs[names.MESSAGING_MESSAGE_ID] = event_id
    detail = _mapping(event.get("detail"))
    parent: Carrier | None = None
    traceparent = _str(detail.get("traceparent"))
    if traceparent:
        parent = {"traceparent": traceparent}
        state = _str(detail.get("tracestate"))
        if state:
            parent["tracestate"] = state
    elif is_mapping(detail.get("_datadog")):
        dd = detail["_datadog"]
        parent = {k.lower(): v for k, v in dd.items() if isinstance(k, str) and isinstance(v, str)}
    return Trigger(name, SpanKind.CONSUMER, attrs, parent=parent or None)


def batch_failures(result: Any) -> int | None:
    """How many items a partial batch response reports as failed, or None."""
    if not is_mapping(result):
        return None
    failures = result.get("batchItemFailures")
    return len(failures) if isinstance(failures, list) else None
