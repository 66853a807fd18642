"""A handler for the Managed Instances tests: a traced span around ``SLEEP_S`` of waiting,
answering with the worker process's pid (awslambdaric runs one process per slot)."""

from __future__ import annotations

import json
import os
import time

from tracing import setup_tracing, traced, traced_handler

setup_tracing()


@traced_handler
def handler(event, context):
    with traced("work"):
        time.sleep(float(os.environ.get("SLEEP_S", "0.3")))
    return {"statusCode": 200, "body": json.dumps({"pid": os.getpid()})}
