"""Stock OpenTelemetry: SDK, OTLP/HTTP exporter, BatchSpanProcessor, psycopg instrumentation,
force_flush at the end of every invocation (the usual recipe for Lambda)."""

import json
import os
import uuid

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
PsycopgInstrumentor().instrument()
tracer = trace.get_tracer("bench")

import psycopg  # noqa: E402

conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


def handler(event, context):
    with tracer.start_as_current_span("POST /todos", kind=SpanKind.SERVER):
        body = json.loads(event.get("body") or "{}")
        with tracer.start_as_current_span("Save Todo"):
            conn.execute(
                "INSERT INTO bench_todos (id, name) VALUES (%s, %s)",
                (uuid.uuid4(), body.get("name", "todo")),
            )
    provider.force_flush()
    return {"statusCode": 201, "body": "{}"}
