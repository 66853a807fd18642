"""The delivery benchmark's handler, run by awslambdaric in the emulator.

Three spans per invocation, as the Todo API makes (the invocation, a business
span, a query-like CLIENT span around 2 ms of waiting, DSQL's network time);
``OTEL_SDK_DISABLED=true`` makes the same module the untraced baseline.
"""

import time

from opentelemetry.trace import SpanKind

from tracing import setup_tracing, traced, traced_handler

setup_tracing()


@traced_handler(routes=["/todos"])
def handler(event, context):
    with traced("Save Todo"), traced("INSERT todos", kind=SpanKind.CLIENT):
        time.sleep(0.002)
    return {"statusCode": 201, "body": "{}"}
