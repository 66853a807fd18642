"""What recognising the trigger costs per invocation, for each documented event type.

    python -m bench.triggers [--calls 20000] [--rounds 5]

For each fixture in ``tests/events/`` (with a trace context added where the
source carries one), the median over rounds of the CPU per call of
:func:`tracing.triggers.describe` plus turning its contexts into parent and
links, the part of ``traced_handler`` that differs between triggers.  The
Function URL event, the one trigger the toolkit knew before, is the baseline
of the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from tracing import propagation, triggers

EVENTS = Path(__file__).resolve().parent.parent / "tests" / "events"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _events() -> dict[str, Any]:
    def load(name: str) -> Any:
        return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))

    url = load("function-url")
    url["headers"]["traceparent"] = TRACEPARENT
    rest = load("apigw-rest")
    rest["headers"]["traceparent"] = TRACEPARENT
    alb = load("alb")
    alb["headers"]["traceparent"] = TRACEPARENT
    sqs = load("sqs")
    for record in sqs["Records"]:
        record["messageAttributes"]["traceparent"] = {
            "stringValue": TRACEPARENT,
            "dataType": "String",
        }
    sqs10 = copy.deepcopy(sqs)
    sqs10["Records"] = [copy.deepcopy(sqs["Records"][0]) for _ in range(10)]
    sns = load("sns")
    sns["Records"][0]["Sns"]["MessageAttributes"]["traceparent"] = {
        "Type": "String",
        "Value": TRACEPARENT,
    }
    bridge = load("eventbridge")
    bridge["detail"]["traceparent"] = TRACEPARENT
    return {
        "Function URL (baseline)": url,
        "API Gateway REST": rest,
        "HTTP API payload 1.0": load("apigw-http-v1"),
        "ALB": alb,
        "SQS, 2 messages": sqs,
        "SQS, 10 messages": sqs10,
        "SNS": sns,
        "EventBridge": bridge,
        "schedule": load("scheduled"),
        "unknown event": {"anything": 1},
    }


def _once(event: Any, table: triggers.RouteTable) -> None:
    trigger = triggers.describe(event, table, "fn")
    propagation.extract(trigger.parent)
    for carrier, _ in trigger.links:
        propagation.extract_span_context(carrier)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    table = triggers.RouteTable(["/todos", "/todos/{id}", "/lambda", "/my/path"])
    events = _events()
    figures: dict[str, list[float]] = {name: [] for name in events}
    for _ in range(args.rounds):
        for name, event in events.items():
            for _ in range(200):
                _once(event, table)
            start = time.process_time_ns()
            for _ in range(args.calls):
                _once(event, table)
            figures[name].append((time.process_time_ns() - start) / args.calls / 1e3)
    base = statistics.median(figures["Function URL (baseline)"])
    print(f"trigger recognition + context extraction, CPU per invocation ({args.rounds} rounds):")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median:6.2f} µs  ({median / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
