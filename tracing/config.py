"""One frozen configuration: explicit argument, then environment variable, then default.

Each setting is declared once, as a field of :class:`TracingConfig` with its
variables, default, parser and doc; :func:`settings` lists them (the docs test
checks this docstring and docs/reference.md against that list).

Environment variables
---------------------
OpenTelemetry:

- ``OTEL_SDK_DISABLED``: ``true`` turns tracing off (no provider is installed).
- ``OTEL_SERVICE_NAME``: service name (before ``DD_SERVICE``, then the resource's
  ``service.name``, then the function name).
- ``OTEL_RESOURCE_ATTRIBUTES``: ``key=value,...`` added to the resource.
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default), ``datadog``, ``xray`` (AWS's OTLP
  endpoint, SigV4), ``stdout-otlp`` (one otlp-stdout line per export), ``console``
  or ``none``.
- ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: full traces URL, used as is.
- ``OTEL_EXPORTER_OTLP_ENDPOINT``: base URL; ``/v1/traces`` is appended.
  Default ``http://localhost:4318/v1/traces`` (the Datadog Lambda Extension
  with ``DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT=localhost:4318``).
  Credentials in a URL are never logged.
- ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS``:
  ``key=value,...`` sent with every export (never logged).
- ``OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`` / ``OTEL_EXPORTER_OTLP_COMPRESSION``:
  ``none`` (default) or ``gzip``.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: ``parentbased_always_on``
  (default), ``always_on``, ``always_off``, ``traceidratio``,
  ``parentbased_always_off``, ``parentbased_traceidratio``; the ratio (default 1.0).

Datadog unified service tagging: ``DD_SERVICE``, ``DD_ENV``, ``DD_VERSION``.

This toolkit:

- ``DSQLTRACE_DELIVERY``: when spans are delivered (see :mod:`tracing.delivery`):
  ``after-response`` (the default in Lambda: an internal extension delivers after
  the response, before the freeze), ``inline`` (before the handler returns; the
  default elsewhere) or ``periodic,<ms>`` (at most once per ``<ms>``, or when a
  batch is full).  On Lambda Managed Instances (``AWS_LAMBDA_MAX_CONCURRENCY``
  set) anything but ``inline`` is background delivery from a thread.
- ``DSQLTRACE_FLUSH_TIMEOUT_MS``: the most one delivery may take, on any
  transport: connect, TLS, encoding, send, answer and retries together (default 250).
- ``DSQLTRACE_EXPORT_COOLOFF_MS``: the longest pause after failed exports
  (default 30000); the pause starts at 1 s and doubles while exports fail.
- ``DSQLTRACE_PROBE_TIMEOUT_MS``: after a failed export, how long the next
  attempt (a probe, one per pause) may wait (default 50).
- ``DSQLTRACE_MAX_QUEUE_SIZE``: spans kept while the collector is unreachable
  (default 2048); older ones are dropped and counted.
- ``DSQLTRACE_MAX_QUEUE_BYTES``: the same bound in estimated encoded bytes
  (default 4194304).
- ``DSQLTRACE_TIMEOUT_MARGIN_MS``: when an invocation is this close to its
  deadline, its span is ended with an error status and sent before Lambda
  stops the function (default 100; 0 turns it off).
- ``DSQLTRACE_COLDSTART_PHASES``: record work done during init and replay it
  under ``aws.lambda.init`` (default ``true``).
- ``DSQLTRACE_LOG_CORRELATION``: add trace ids to log records (default ``true``).
- ``DSQLTRACE_EXPLAIN``: query plans on spans (see :mod:`tracing.explain`): ``off``
  (default), ``slow,<ms>`` (explain statements that took at least ``<ms>``) or
  ``ratio,<r>`` (explain that share of statements, at random).
- ``DSQLTRACE_EXPLAIN_INTERVAL_S``: each distinct statement (by its redacted text)
  is explained at most once per this many seconds per environment (default 600).
- ``DSQLTRACE_SNAPSTART_HOOKS``: with SnapStart (``AWS_LAMBDA_INITIALIZATION_TYPE``
  ``snap-start``), register the toolkit's runtime hooks (default ``true``; see
  :mod:`tracing.snapstart`).  ``false`` leaves ids repeating across restored
  environments: only for functions that reseed and reopen delivery themselves.

A bad value logs one warning naming the variable and falls back to the default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from tracing.runtime import logger

__all__ = [
    "DEFAULT_OTLP_ENDPOINT",
    "EXPORTERS",
    "SAMPLERS",
    "Setting",
    "TracingConfig",
    "parse_key_values",
    "redact_url",
    "settings",
]

EXPORTERS = ("otlp", "datadog", "xray", "stdout-otlp", "console", "none")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318/v1/traces"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_UNSET: Any = object()


@dataclass(frozen=True)
class Setting:
    """One setting: its field, the variables read in order, its default and what it means."""

    field: str
    variables: tuple[str, ...]
    default: object
    parse: Callable[[object, str], object]
    doc: str
    secret: bool = False


def _setting(
    default: object,
    *variables: str,
    parse: Callable[[object, str], object],
    doc: str,
    secret: bool = False,
) -> Any:
    meta = {"setting": (variables, default, parse, doc, secret)}
    return dataclasses.field(default=_UNSET, repr=not secret, compare=not secret, metadata=meta)


# --- parsers: a raw value (a string from the environment, or an argument) to the typed one;
# --- ValueError on a bad value ------------------------------------------------------------


def _text(value: object, variable: str) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _bool(value: object, variable: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(value)


def _at_least(lowest: int) -> Callable[[object, str], int]:
    def parse(value: object, variable: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(value)
        number = int(value)
        if number < lowest:
            raise ValueError(value)
        return number

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value: object, variable: str) -> str:
        # The spec allows a comma-separated list of exporters; one runs.
        text = str(value).split(",", 1)[0].strip().lower()
        if text not in choices:
            raise ValueError(value)
        return text

    return parse


def _ratio(value: object, variable: str) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    ratio = float(value)  # type: ignore[arg-type]
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(value)
    return ratio


def _endpoint(value: object, variable: str) -> str:
    url = str(value).strip()
    if variable == "OTEL_EXPORTER_OTLP_ENDPOINT":
        url = url.rstrip("/") + "/v1/traces"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(value)
    return url


def _delivery(value: object, variable: str) -> str:
    text = str(value).strip().lower().replace(" ", "")
    if text in ("auto", "inline", "after-response"):
        return text
    kind, _, interval = text.partition(",")
    if kind == "periodic" and interval.isascii() and interval.isdigit() and int(interval) > 0:
        return text
    raise ValueError(value)


def _explain(value: object, variable: str) -> str:
    text = str(value).strip().lower().replace(" ", "")
    if text == "off":
        return text
    kind, _, figure = text.partition(",")
    if kind == "slow" and figure.isascii() and figure.isdigit():
        return text
    if kind == "ratio":
        ratio = float(figure)
        if 0.0 < ratio <= 1.0:
            return f"ratio,{ratio}"
    raise ValueError(value)


def _headers(value: object, variable: str) -> Mapping[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return parse_key_values(str(value), variable, secret=True)


def _resource(value: object, variable: str) -> Mapping[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    return parse_key_values(str(value), variable)


@dataclass(frozen=True)
class TracingConfig:
    """Settings of :func:`tracing.setup_tracing`.

    ``TracingConfig(service_name="todo", flush_timeout_ms=100)``: every field not
    given is read from its environment variable (``environ``, default
    ``os.environ``), else takes its default.  A bad value, given or read, logs one
    warning and falls back to the default.
    """

    resource_attributes: Mapping[str, str] = _setting(
        {},
        "OTEL_RESOURCE_ATTRIBUTES",
        parse=_resource,
        doc="``key=value,...`` added to the resource",
    )
    disabled: bool = _setting(
        False, "OTEL_SDK_DISABLED", parse=_bool, doc="``true``: no tracing at all"
    )
    service_name: str = _setting(
        None,
        "OTEL_SERVICE_NAME",
        "DD_SERVICE",
        parse=_text,
        doc="service name; else the resource's ``service.name``, else the function name",
    )
    service_version: str | None = _setting(
        None, "DD_VERSION", parse=_text, doc="``service.version``; else the resource's"
    )
    environment: str | None = _setting(
        None, "DD_ENV", parse=_text, doc="``deployment.environment.name``; else the resource's"
    )
    exporter: str = _setting(
        "otlp",
        "OTEL_TRACES_EXPORTER",
        parse=_choice(EXPORTERS),
        doc="``otlp``, ``datadog`` (ddtrace, trace-agent API on :8126), ``xray``, "
        "``stdout-otlp``, ``console``, ``none``",
    )
    endpoint: str = _setting(
        DEFAULT_OTLP_ENDPOINT,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        parse=_endpoint,
        doc="the traces URL; ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets ``/v1/traces`` appended",
    )
    headers: Mapping[str, str] = _setting(
        {},
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
        parse=_headers,
        doc="``key=value,...`` sent with every export (never logged)",
        secret=True,
    )
    compression: str = _setting(
        "none",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        parse=_choice(("none", "gzip")),
        doc="``none`` or ``gzip``",
    )
    sampler: str = _setting(
        "parentbased_always_on",
        "OTEL_TRACES_SAMPLER",
        parse=_choice(SAMPLERS),
        doc="``always_on``, ``always_off``, ``traceidratio``, ``parentbased_*``",
    )
    sampler_ratio: float = _setting(
        1.0, "OTEL_TRACES_SAMPLER_ARG", parse=_ratio, doc="ratio of the ``traceidratio`` samplers"
    )
    delivery: str = _setting(
        "auto",
        "DSQLTRACE_DELIVERY",
        parse=_delivery,
        doc="``after-response`` (Lambda's default), ``inline`` (elsewhere), ``periodic,<ms>``; "
        "on Lambda Managed Instances background delivery (see :mod:`tracing.delivery`)",
    )
    flush_timeout_ms: int = _setting(
        250,
        "DSQLTRACE_FLUSH_TIMEOUT_MS",
        parse=_at_least(1),
        doc="the most one delivery takes, on any transport, retries included",
    )
    export_cooloff_ms: int = _setting(
        30_000,
        "DSQLTRACE_EXPORT_COOLOFF_MS",
        parse=_at_least(1),
        doc="the longest pause after failed exports (1 s, doubling)",
    )
    probe_timeout_ms: int = _setting(
        50,
        "DSQLTRACE_PROBE_TIMEOUT_MS",
        parse=_at_least(1),
        doc="after a failed export, the most the next attempt (one per pause) waits",
    )
    max_queue_size: int = _setting(
        2048,
        "DSQLTRACE_MAX_QUEUE_SIZE",
        parse=_at_least(1),
        doc="spans kept while the collector is unreachable",
    )
    max_queue_bytes: int = _setting(
        4 * 1024 * 1024,
        "DSQLTRACE_MAX_QUEUE_BYTES",
        parse=_at_least(1024),
        doc="the same bound, in estimated encoded bytes",
    )
    timeout_margin_ms: int = _setting(
        100,
        "DSQLTRACE_TIMEOUT_MARGIN_MS",
        parse=_at_least(0),
        doc="this close to the deadline the invocation's span is ended and sent; ``0``: off",
    )
    coldstart_phases: bool = _setting(
        True,
        "DSQLTRACE_COLDSTART_PHASES",
        parse=_bool,
        doc="record init work and replay it under ``aws.lambda.init``",
    )
    log_correlation: bool = _setting(
        True, "DSQLTRACE_LOG_CORRELATION", parse=_bool, doc="trace ids on log records"
    )
    explain: str = _setting(
        "off",
        "DSQLTRACE_EXPLAIN",
        parse=_explain,
        doc="plans on spans: ``off``, ``slow,<ms>`` or ``ratio,<r>`` (see :mod:`tracing.explain`)",
    )
    explain_interval_s: int = _setting(
        600,
        "DSQLTRACE_EXPLAIN_INTERVAL_S",
        parse=_at_least(1),
        doc="each distinct statement is explained at most once per this many seconds",
    )
    snapstart_hooks: bool = _setting(
        True,
        "DSQLTRACE_SNAPSTART_HOOKS",
        parse=_bool,
        doc="with SnapStart, register the toolkit's before-snapshot and after-restore hooks",
    )
    environ: InitVar[Mapping[str, str] | None] = None

    def __post_init__(self, environ: Mapping[str, str] | None) -> None:
        env = os.environ if environ is None else environ
        for s in settings():
            given = getattr(self, s.field)
            object.__setattr__(self, s.field, _resolve(s, given, env))
        resource = self.resource_attributes
        service = (
            self.service_name
            or resource.get("service.name")
            or env.get("AWS_LAMBDA_FUNCTION_NAME")
            or "unknown_service"
        )
        object.__setattr__(self, "service_name", service)
        if self.service_version is None:
            object.__setattr__(self, "service_version", resource.get("service.version"))
        if self.environment is None:
            environment = resource.get("deployment.environment.name") or resource.get(
                "deployment.environment"
            )
            object.__setattr__(self, "environment", environment)


def _resolve(s: Setting, given: object, env: Mapping[str, str]) -> object:
    if given is not _UNSET:
        try:
            return s.parse(given, s.field)
        except (TypeError, ValueError):
            _warn_bad(s, s.field, given)
            return s.default
    for variable in s.variables:
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        try:
            return s.parse(raw, variable)
        except (TypeError, ValueError):
            _warn_bad(s, variable, raw)
            return s.default
    return s.default


def _warn_bad(s: Setting, source: str, value: object) -> None:
    shown = "<redacted>" if s.secret else redact_url(str(value))
    logger.warning("tracing: invalid value %r for %s; using %s", shown, source, s.default)


_SETTINGS: tuple[Setting, ...] | None = None


def settings() -> tuple[Setting, ...]:
    """Every setting of :class:`TracingConfig`, in declaration order."""
    global _SETTINGS
    if _SETTINGS is None:
        found = []
        for f in dataclasses.fields(TracingConfig):
            meta = f.metadata.get("setting")
            if meta is not None:
                variables, default, parse, doc, secret = meta
                found.append(Setting(f.name, variables, default, parse, doc, secret))
        _SETTINGS = tuple(found)
    return _SETTINGS


def parse_key_values(raw: str, source: str, *, secret: bool = False) -> dict[str, str]:
    """Parse the OTel ``key=value,key2=value2`` form (values percent-decoded)."""
    result: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Never echo a header value: it may be an API key.
            shown = "<redacted>" if secret else item.strip()
            logger.warning("tracing: ignoring malformed entry %r in %s", shown, source)
            continue
        result[unquote(key.strip())] = unquote(value.strip())
    return result


def redact_url(text: str) -> str:
    """``text`` with the credentials and query of a URL in it removed (for logs and spans)."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text.strip())
        netloc = parts.netloc.rpartition("@")[2]
        query = "<redacted>" if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparsable URL>"
