"""A small traced Lambda handler module, run in a fresh process by the agent tests.

``python -m tests.apps.traced_app N`` imports it (init phases), then invokes
the handler N times with Function URL events and prints each response.
"""

from __future__ import annotations

import json
import sys
import time

from handlers import names as app_names
from tests.lambda_events import LambdaContext, http_event
from tracing import names, setup_tracing, traced, traced_handler

setup_tracing()

with traced(names.DSQL_CONNECT):
    with traced(names.DSQL_TOKEN_GENERATE):
        time.sleep(0.001)
    time.sleep(0.002)


@traced(app_names.SAVE_TODO)
def save() -> None:
    time.sleep(0.001)


@traced_handler(routes=["/todos", "/todos/{id}"])
def handler(event, context):
    save()
    return {"statusCode": 201, "body": "{}"}


if __name__ == "__main__":
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2):
        print(json.dumps(handler(http_event("POST", "/todos"), LambdaContext())))
