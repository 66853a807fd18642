"""Runs inside a fresh process: import a handler module, invoke it, report timings as JSON lines.

``python -m bench.driver MODULE WARM`` prints ``BENCH {"phase": "first", ...}``
as soon as the first invocation has returned (its spans are delivered by then),
then, after WARM more invocations, ``BENCH {"phase": "warm", ...}`` with each
invocation's latency in nanoseconds and the CPU time they used.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import uuid


class Context:
    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    memory_limit_in_mb = 256
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "2026/11/27/[$LATEST]bench"
    client_context = None
    identity = None

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def event() -> dict:
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/todos",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "user-agent": "bench"},
        "requestContext": {
            "http": {
                "method": "POST",
                "path": "/todos",
                "sourceIp": "127.0.0.1",
                "userAgent": "bench",
            },
            "requestId": str(uuid.uuid4()),
            "timeEpoch": int(time.time() * 1000),
        },
        "body": '{"name": "bench"}',
        "isBase64Encoded": False,
    }


#: Result lines start with this (libraries under test print to stdout too).
PREFIX = "BENCH "


def report(result: dict) -> None:
    print(PREFIX + json.dumps(result), flush=True)


def parse(output: str) -> list[dict]:
    """The driver's result lines in a process's output."""
    return [
        json.loads(line[len(PREFIX) :]) for line in output.splitlines() if line.startswith(PREFIX)
    ]


def _new_trace_header() -> None:
    """As the Lambda runtime does before each invocation (the X-Ray SDK reads it)."""
    os.environ["_X_AMZN_TRACE_ID"] = (
        f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=1"
    )


def main() -> None:
    module_name, warm = sys.argv[1], int(sys.argv[2])
    t0 = time.perf_counter_ns()
    module = importlib.import_module(module_name)
    t1 = time.perf_counter_ns()
    _new_trace_header()
    module.handler(event(), Context())
    t2 = time.perf_counter_ns()
    report({"phase": "first", "init_ns": t1 - t0, "first_ns": t2 - t1})
    if warm:
        latencies = []
        cpu0 = time.process_time_ns()
        for _ in range(warm):
            ev, ctx = event(), Context()
            _new_trace_header()
            start = time.perf_counter_ns()
            module.handler(ev, ctx)
            latencies.append(time.perf_counter_ns() - start)
        cpu = time.process_time_ns() - cpu0
        report({"phase": "warm", "latencies_ns": latencies, "cpu_ns": cpu})


if __name__ == "__main__":
    main()
