"""TracingConfig: argument, then environment variable, then default; one warning on a bad value."""

from __future__ import annotations

import logging

import pytest

from tracing.config import DEFAULT_OTLP_ENDPOINT, TracingConfig


def resolve(env: dict[str, str], **kwargs) -> TracingConfig:
    return TracingConfig(environ=env, **kwargs)


def test_defaults() -> None:
    config = resolve({})
    assert config.exporter == "otlp"
    assert config.endpoint == DEFAULT_OTLP_ENDPOINT == "http://localhost:4318/v1/traces"
    assert config.sampler == "parentbased_always_on"
    assert config.flush_timeout_ms == 250
    assert config.service_name == "unknown_service"
    assert not config.disabled


def test_argument_beats_environment_beats_default() -> None:
    env = {"OTEL_SERVICE_NAME": "from-otel", "DD_SERVICE": "from-dd"}
    assert resolve(env, service_name="arg").service_name == "arg"
    assert resolve(env).service_name == "from-otel"
    assert resolve({"DD_SERVICE": "from-dd"}).service_name == "from-dd"
    assert resolve({"AWS_LAMBDA_FUNCTION_NAME": "fn"}).service_name == "fn"
    assert resolve({"DSQLTRACE_FLUSH_TIMEOUT_MS": "80"}).flush_timeout_ms == 80
    assert resolve({"DSQLTRACE_FLUSH_TIMEOUT_MS": "80"}, flush_timeout_ms=40).flush_timeout_ms == 40


def test_unified_service_tagging_and_resource_attributes() -> None:
    env = {
        "DD_ENV": "prod",
        "DD_VERSION": "2.0.1",
        "OTEL_RESOURCE_ATTRIBUTES": "team=db%20tools,service.name=from-resource",
    }
    config = resolve(env)
    assert config.environment == "prod"
    assert config.service_version == "2.0.1"
    assert config.service_name == "from-resource"
    assert config.resource_attributes["team"] == "db tools"
    assert resolve({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=stg"}).environment == (
        "stg"
    )


def test_endpoints() -> None:
    assert resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}).endpoint == (
        "http://collector:4318/v1/traces"
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://intake.example/otlp/traces",
    }
    assert resolve(env).endpoint == "https://intake.example/otlp/traces"


def test_headers_are_parsed_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    env = {"OTEL_EXPORTER_OTLP_HEADERS": "dd-api-key=abc%3D123,broken-secret-value"}
    with caplog.at_level(logging.WARNING, logger="dsql-lambda-tracing"):
        config = resolve(env)
    assert config.headers == {"dd-api-key": "abc=123"}
    assert "broken-secret-value" not in caplog.text
    assert "abc" not in repr(config)
    assert "OTEL_EXPORTER_OTLP_HEADERS" in caplog.text


@pytest.mark.parametrize(
    ("env", "field", "fallback", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "exporter", "otlp", "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_SAMPLER": "sometimes"},
            "sampler",
            "parentbased_always_on",
            "OTEL_TRACES_SAMPLER",
        ),
        ({"OTEL_TRACES_SAMPLER_ARG": "lots"}, "sampler_ratio", 1.0, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "sampler_ratio", 1.0, "OTEL_TRACES_SAMPLER_ARG"),
        (
            {"DSQLTRACE_FLUSH_TIMEOUT_MS": "-5"},
            "flush_timeout_ms",
            250,
            "DSQLTRACE_FLUSH_TIMEOUT_MS",
        ),
        ({"DSQLTRACE_MAX_QUEUE_SIZE": "many"}, "max_queue_size", 2048, "DSQLTRACE_MAX_QUEUE_SIZE"),
        ({"OTEL_SDK_DISABLED": "maybe"}, "disabled", False, "OTEL_SDK_DISABLED"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
            "endpoint",
            DEFAULT_OTLP_ENDPOINT,
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ),
        (
            {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
            "compression",
            "none",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ),
    ],
)
def test_bad_values_warn_once_and_fall_back(
    caplog: pytest.LogCaptureFixture, env, field, fallback, variable
) -> None:
    with caplog.at_level(logging.WARNING, logger="dsql-lambda-tracing"):
        config = resolve(env)
    assert getattr(config, field) == fallback
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert variable in warnings[0].getMessage()


def test_disabled_and_sampler_ratio() -> None:
    assert resolve({"OTEL_SDK_DISABLED": "true"}).disabled
    config = resolve({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert (config.sampler, config.sampler_ratio) == ("traceidratio", 0.25)


def test_always_off_sampler_records_nothing() -> None:
    from tests.lambda_events import LambdaContext, http_event
    from tracing import traced_handler
    from tracing.testing import capture_spans

    sink = capture_spans(TracingConfig(sampler="always_off"))

    @traced_handler
    def handler(event, context):
        return {"statusCode": 200}

    assert handler(http_event(), LambdaContext()) == {"statusCode": 200}
    assert sink.spans == []
