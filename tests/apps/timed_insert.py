"""The Todo insert function, timed from inside: each response says how long the whole traced
invocation took, span delivery included (the reliability suite compares these)."""

import time

from handlers import insert


def handler(event, context):
    start = time.perf_counter_ns()
    result = insert.handler(event, context)
    elapsed_us = (time.perf_counter_ns() - start) // 1000
    result.setdefault("headers", {})["x-invocation-us"] = str(elapsed_us)
    return result
