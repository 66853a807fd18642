"""opentelemetry-instrumentation-aws-lambda (AwsLambdaInstrumentor), SDK, OTLP/HTTP, psycopg
instrumentation: it wraps the handler named by _HANDLER and force-flushes after each call."""

import json
import os
import uuid

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
PsycopgInstrumentor().instrument()
tracer = trace.get_tracer("bench")

import psycopg  # noqa: E402

conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    with tracer.start_as_current_span("Save Todo"):
        conn.execute(
            "INSERT INTO bench_todos (id, name) VALUES (%s, %s)",
            (uuid.uuid4(), body.get("name", "todo")),
        )
    return {"statusCode": 201, "body": "{}"}


AwsLambdaInstrumentor().instrument()
