"""The baseline: a small psycopg Todo handler with no tracing at all."""

import json
import os
import uuid

import psycopg

conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    conn.execute(
        "INSERT INTO bench_todos (id, name) VALUES (%s, %s)",
        (uuid.uuid4(), body.get("name", "todo")),
    )
    return {"statusCode": 201, "body": "{}"}
