"""The same handler traced by this toolkit: root, cold-start phases, connect and query spans."""

import json
import os
import uuid

from tracing import setup_tracing, traced, traced_handler
from tracing.db import TracedConnection

setup_tracing()

conn = TracedConnection.connect(os.environ["DATABASE_URL"], autocommit=True)


@traced("Save Todo")
def save(name: str) -> None:
    conn.execute("INSERT INTO bench_todos (id, name) VALUES (%s, %s)", (uuid.uuid4(), name))


@traced_handler(routes=["/todos"])
def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    save(body.get("name", "todo"))
    return {"statusCode": 201, "body": "{}"}
