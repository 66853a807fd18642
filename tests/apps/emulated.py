"""Lambda handlers for the emulator's tests (run by awslambdaric in emulated environments)."""

from __future__ import annotations

import os
import threading
import time

STARTED = time.time()


def echo(event, context):
    """What the function saw: its event, context and environment."""
    return {
        "statusCode": 200,
        "headers": {"x-pid": str(os.getpid())},
        "body": __import__("json").dumps(
            {
                "event": event,
                "pid": os.getpid(),
                "request_id": context.aws_request_id,
                "arn": context.invoked_function_arn,
                "remaining_ms": context.get_remaining_time_in_millis(),
                "env": {
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith(("AWS_", "_HANDLER", "LAMBDA_", "_X_AMZN"))
                },
            }
        ),
    }


def plain(event, context):
    """A result without statusCode: the Function URL answers 200 with it as JSON."""
    return {"hello": "world"}


def fail(event, context):
    raise RuntimeError("handler failed on purpose")


def slow(event, context):
    time.sleep(float(os.environ.get("SLOW_SECONDS", "5")))
    return {"statusCode": 200, "body": "late"}


def background(event, context):
    """Starts a thread that writes a file 0.3 s after the handler returned."""
    path = os.environ["MARKER_FILE"]

    def later() -> None:
        time.sleep(0.3)
        with open(path, "a") as f:
            f.write(f"{time.time()}\n")

    threading.Thread(target=later, daemon=True).start()
    return {"statusCode": 200, "body": "started"}


def traced(event, context):
    """The same echo, wrapped by the toolkit (its delivery settings come from the environment)."""
    return _traced_echo(event, context)


def _make_traced():
    from tracing import traced_handler

    return traced_handler(lambda event, context: {"statusCode": 200, "body": "traced"})


_traced_echo = _make_traced() if os.environ.get("EMULATED_TRACED") else None
