"""A traced handler that runs past its deadline (for the impending-timeout scenario)."""

import time

from tracing import setup_tracing, traced_handler

setup_tracing()


@traced_handler(routes=["/todos"])
def handler(event, context):
    time.sleep(30)
    return {"statusCode": 200}
