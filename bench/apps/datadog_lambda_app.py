"""ddtrace + datadog-lambda's handler wrapper, psycopg patched, sending to the trace-agent API
(the Datadog APM test agent stands in for the extension)."""

import json
import os
import uuid

from ddtrace import patch

patch(psycopg=True)

import psycopg  # noqa: E402
from datadog_lambda.wrapper import datadog_lambda_wrapper  # noqa: E402
from ddtrace.trace import tracer  # noqa: E402

conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


@datadog_lambda_wrapper
def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    with tracer.trace("Save Todo"):
        conn.execute(
            "INSERT INTO bench_todos (id, name) VALUES (%s, %s)",
            (uuid.uuid4(), body.get("name", "todo")),
        )
    return {"statusCode": 201, "body": "{}"}
