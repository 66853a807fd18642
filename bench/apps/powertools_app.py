"""Powertools for AWS Lambda's Tracer (AWS X-Ray SDK): segments go by UDP to the daemon address,
with no wait for delivery."""

import json
import os
import uuid

import psycopg
from aws_lambda_powertools import Tracer

tracer = Tracer()  # service from POWERTOOLS_SERVICE_NAME
conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


@tracer.capture_method
def save(name):
    conn.execute("INSERT INTO bench_todos (id, name) VALUES (%s, %s)", (uuid.uuid4(), name))


@tracer.capture_lambda_handler
def handler(event, context):
    body = json.loads(event.get("body") or "{}")
    save(body.get("name", "todo"))
    return {"statusCode": 201, "body": "{}"}
