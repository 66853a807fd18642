"""One frozen configuration: explicit argument, then environment variable, then default.

Environment variables
---------------------
OpenTelemetry:

- ``OTEL_SDK_DISABLED``: ``true`` turns tracing off (no provider is installed).
- ``OTEL_SERVICE_NAME``: service name (before ``DD_SERVICE``).
- ``OTEL_RESOURCE_ATTRIBUTES``: ``key=value,...`` added to the resource.
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default), ``datadog``, ``console`` or ``none``.
- ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: full traces URL, used as is.
- ``OTEL_EXPORTER_OTLP_ENDPOINT``: base URL; ``/v1/traces`` is appended.
  Default ``http://localhost:4318/v1/traces`` (the Datadog Lambda Extension
  with ``DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT=localhost:4318``).
- ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``OTEL_EXPORTER_OTLP_HEADERS``:
  ``key=value,...`` sent with every export (never logged).
- ``OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`` / ``OTEL_EXPORTER_OTLP_COMPRESSION``:
  ``none`` (default) or ``gzip``.
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: ``parentbased_always_on``
  (default), ``always_on``, ``always_off``, ``traceidratio``,
  ``parentbased_always_off``, ``parentbased_traceidratio``.

Datadog unified service tagging: ``DD_SERVICE``, ``DD_ENV``, ``DD_VERSION``.

This toolkit:

- ``DSQLTRACE_FLUSH_TIMEOUT_MS``: the most an invocation waits for its spans to
  be delivered (default 250).
- ``DSQLTRACE_EXPORT_COOLOFF_MS``: the longest pause after failed exports
  (default 30000); the pause starts at 1 s and doubles while exports fail.
- ``DSQLTRACE_PROBE_TIMEOUT_MS``: after a failed export, how long the next
  attempt (a probe, one per pause) may wait (default 50), so that a collector
  that never answers costs one full flush timeout once, then almost nothing.
- ``DSQLTRACE_MAX_QUEUE_SIZE``: spans kept while the collector is unreachable
  (default 2048); older ones are dropped and counted.
- ``DSQLTRACE_TIMEOUT_MARGIN_MS``: when an invocation is this close to its
  deadline, its span is ended with an error status and sent before Lambda
  stops the function (default 100; 0 turns it off).
- ``DSQLTRACE_COLDSTART_PHASES``: record work done during init and replay it
  under ``aws.lambda.init`` (default ``true``).
- ``DSQLTRACE_LOG_CORRELATION``: add trace ids to log records (default ``true``).

A bad value logs one warning naming the variable and falls back to the default.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

logger = logging.getLogger("tracing")

EXPORTERS = ("otlp", "datadog", "console", "none")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_FLUSH_TIMEOUT_MS = 250
DEFAULT_EXPORT_COOLOFF_MS = 30_000
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_PROBE_TIMEOUT_MS = 50
DEFAULT_TIMEOUT_MARGIN_MS = 100

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class TracingConfig:
    """Settings of :func:`tracing.setup_tracing`; build it with :meth:`resolve`."""

    disabled: bool = False
    service_name: str = "unknown_service"
    service_version: str | None = None
    environment: str | None = None
    exporter: str = "otlp"
    endpoint: str = DEFAULT_OTLP_ENDPOINT
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    compression: str = "none"
    sampler: str = "parentbased_always_on"
    sampler_ratio: float = 1.0
    flush_timeout_ms: int = DEFAULT_FLUSH_TIMEOUT_MS
    export_cooloff_ms: int = DEFAULT_EXPORT_COOLOFF_MS
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    probe_timeout_ms: int = DEFAULT_PROBE_TIMEOUT_MS
    timeout_margin_ms: int = DEFAULT_TIMEOUT_MARGIN_MS
    coldstart_phases: bool = True
    log_correlation: bool = True
    resource_attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        *,
        service_name: str | None = None,
        service_version: str | None = None,
        environment: str | None = None,
        exporter: str | None = None,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        sampler: str | None = None,
        sampler_ratio: float | None = None,
        flush_timeout_ms: int | None = None,
        export_cooloff_ms: int | None = None,
        max_queue_size: int | None = None,
        probe_timeout_ms: int | None = None,
        timeout_margin_ms: int | None = None,
        coldstart_phases: bool | None = None,
        log_correlation: bool | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TracingConfig:
        """Combine explicit arguments, environment variables and defaults."""
        env = os.environ if environ is None else environ
        resource = parse_key_values(
            env.get("OTEL_RESOURCE_ATTRIBUTES", ""), "OTEL_RESOURCE_ATTRIBUTES"
        )

        def pick(arg: str | None, *names: str) -> str | None:
            if arg is not None:
                return arg
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        exporter_value = (pick(exporter, "OTEL_TRACES_EXPORTER") or "otlp").lower()
        if "," in exporter_value:  # the spec allows a list; we run one exporter
            exporter_value = exporter_value.split(",", 1)[0].strip()
        if exporter_value not in EXPORTERS:
            _warn_bad(
                "OTEL_TRACES_EXPORTER" if exporter is None else "exporter", exporter_value, "otlp"
            )
            exporter_value = "otlp"

        traces_endpoint = pick(endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if traces_endpoint is None:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            traces_endpoint = base.rstrip("/") + "/v1/traces" if base else DEFAULT_OTLP_ENDPOINT
        if not traces_endpoint.startswith(("http://", "https://")):
            _warn_bad("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_endpoint, DEFAULT_OTLP_ENDPOINT)
            traces_endpoint = DEFAULT_OTLP_ENDPOINT

        if headers is None:
            raw_headers = (
                pick(None, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or ""
            )
            headers = parse_key_values(raw_headers, "OTEL_EXPORTER_OTLP_HEADERS", secret=True)

        compression = (
            pick(None, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION")
            or "none"
        ).lower()
        if compression not in ("none", "gzip"):
            _warn_bad("OTEL_EXPORTER_OTLP_COMPRESSION", compression, "none")
            compression = "none"

        sampler_value = (pick(sampler, "OTEL_TRACES_SAMPLER") or "parentbased_always_on").lower()
        if sampler_value not in SAMPLERS:
            _warn_bad("OTEL_TRACES_SAMPLER", sampler_value, "parentbased_always_on")
            sampler_value = "parentbased_always_on"
        ratio = sampler_ratio
        if ratio is None:
            ratio = _float(env, "OTEL_TRACES_SAMPLER_ARG", 1.0)
        if not 0.0 <= ratio <= 1.0:
            _warn_bad("OTEL_TRACES_SAMPLER_ARG", str(ratio), "1.0")
            ratio = 1.0

        service = pick(service_name, "OTEL_SERVICE_NAME", "DD_SERVICE") or resource.get(
            "service.name"
        )
        service = service or env.get("AWS_LAMBDA_FUNCTION_NAME") or "unknown_service"

        return cls(
            disabled=_bool(env, "OTEL_SDK_DISABLED", False),
            service_name=service,
            service_version=pick(service_version, "DD_VERSION") or resource.get("service.version"),
            environment=pick(environment, "DD_ENV")
            or resource.get("deployment.environment.name")
            or resource.get("deployment.environment"),
            exporter=exporter_value,
            endpoint=traces_endpoint,
            headers=dict(headers),
            compression=compression,
            sampler=sampler_value,
            sampler_ratio=ratio,
            flush_timeout_ms=_positive(
                flush_timeout_ms, env, "DSQLTRACE_FLUSH_TIMEOUT_MS", DEFAULT_FLUSH_TIMEOUT_MS
            ),
            export_cooloff_ms=_positive(
                export_cooloff_ms, env, "DSQLTRACE_EXPORT_COOLOFF_MS", DEFAULT_EXPORT_COOLOFF_MS
            ),
            max_queue_size=_positive(
                max_queue_size, env, "DSQLTRACE_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE
            ),
            probe_timeout_ms=_positive(
                probe_timeout_ms, env, "DSQLTRACE_PROBE_TIMEOUT_MS", DEFAULT_PROBE_TIMEOUT_MS
            ),
            timeout_margin_ms=_positive(
                timeout_margin_ms,
                env,
                "DSQLTRACE_TIMEOUT_MARGIN_MS",
                DEFAULT_TIMEOUT_MARGIN_MS,
                allow_zero=True,
            ),
            coldstart_phases=(
                coldstart_phases
                if coldstart_phases is not None
                else _bool(env, "DSQLTRACE_COLDSTART_PHASES", True)
            ),
            log_correlation=(
                log_correlation
                if log_correlation is not None
                else _bool(env, "DSQLTRACE_LOG_CORRELATION", True)
            ),
            resource_attributes=resource,
        )


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


def _warn_bad(name: str, value: str, default: str) -> None:
    logger.warning("tracing: invalid value %r for %s; using %s", value, name, default)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _warn_bad(name, raw, str(default).lower())
    return default


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        _warn_bad(name, raw, str(default))
        return default


def _positive(
    arg: int | None, env: Mapping[str, str], name: str, default: int, *, allow_zero: bool = False
) -> int:
    lowest = 0 if allow_zero else 1
    if arg is not None:
        if arg >= lowest:
            return arg
        _warn_bad(name.removeprefix("DSQLTRACE_").lower(), str(arg), str(default))
        return default
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < lowest:
        _warn_bad(name, raw, str(default))
        return default
    return value
