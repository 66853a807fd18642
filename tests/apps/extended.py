"""Lambda handlers for the delivery tests (run by awslambdaric in emulated environments).

What a module does at import time is chosen by ``EXTENDED_APP``, so that each test
gets exactly the init it needs:

- ``sleepy-extension``: registers an internal extension of its own that, on every
  INVOKE, sleeps ``EXTENSION_SLEEP_S`` after the response, then writes ``MARKER_FILE``;
- ``traced``: the toolkit with its default delivery, a wrapped handler;
- ``untraced``: ``setup_tracing()`` but a handler that is not wrapped;
- ``cpu``: a handler that burns ``CPU_MS`` of CPU and says how long that took.
"""

from __future__ import annotations

import json
import os
import threading
import time

APP = os.environ.get("EXTENDED_APP", "")


def _sleepy_extension() -> None:
    from tracing.extension import ExtensionClient

    client = ExtensionClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    client.register("sleepy-test-extension", timeout=1.0)
    pause = float(os.environ.get("EXTENSION_SLEEP_S", "0.3"))
    marker = os.environ["MARKER_FILE"]

    def loop() -> None:
        while True:
            event = client.next_event()
            if event is None:
                continue
            time.sleep(pause)  # past the runtime's response: the environment may not freeze
            with open(marker, "a") as f:
                f.write(f"{event.request_id} {time.time_ns()}\n")

    threading.Thread(target=loop, daemon=True).start()


if APP == "sleepy-extension":
    _sleepy_extension()

if APP in ("traced", "untraced"):
    from tracing import setup_tracing

    setup_tracing()


def _plain(event, context):
    mode = None
    if APP in ("traced", "untraced"):
        from tracing import runtime

        rt = runtime.current()
        mode = {"name": rt.mode.name, "driven": getattr(rt.mode, "driven", None)} if rt else None
    threads = sorted(t.name for t in threading.enumerate())
    return {
        "statusCode": 200,
        "body": json.dumps({"pid": os.getpid(), "threads": threads, "mode": mode}),
    }


if APP == "traced":
    from tracing import traced_handler

    handler = traced_handler(_plain)
else:
    handler = _plain


def late_register(event, context):
    """Tries to register an extension after init: Lambda refuses."""
    from tracing.extension import ExtensionClient, ExtensionError

    try:
        ExtensionClient(os.environ["AWS_LAMBDA_RUNTIME_API"]).register("late", timeout=1.0)
    except ExtensionError as exc:
        return {"statusCode": 200, "body": json.dumps({"refused": str(exc)})}
    return {"statusCode": 200, "body": json.dumps({"refused": None})}


def cpu(event, context):
    """Burns CPU_MS milliseconds of this process's CPU; answers with the wall time it took."""
    budget = float(os.environ.get("CPU_MS", "50")) / 1000
    start_cpu, start_wall = time.process_time(), time.monotonic()
    x = 0
    while time.process_time() - start_cpu < budget:
        for i in range(1000):
            x += i * i
    wall = time.monotonic() - start_wall
    return {"statusCode": 200, "body": json.dumps({"wall_s": wall, "cpu_s": budget})}
