"""The load benchmark's CPU accounting: each process of the stack counted under its role."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from bench import cpu
from bench.coldstart import start_collector


def test_collector_cpu_is_counted_under_its_role(tmp_path: Path) -> None:
    process, port = start_collector(tmp_path / "spans.jsonl")
    try:
        before = cpu.snapshot()
        assert (process.pid, "collector") in before
        # Make the collector work: many small bad requests, each answered 400.
        connection = http.client.HTTPConnection("127.0.0.1", port)
        start = time.monotonic()
        while time.monotonic() - start < 0.5:
            connection.request(
                "POST", "/v1/traces", b"\xff", {"Content-Type": "application/x-protobuf"}
            )
            response = connection.getresponse()
            response.read()
            assert response.status == 400
        spent = time.process_time()
        while time.process_time() - spent < 0.05:  # this process's own CPU: several clock ticks
            pass
        after = cpu.snapshot()
    finally:
        process.terminate()
        process.wait(10)
    used = cpu.per_request(before, after, requests=10)
    assert set(used) == set(cpu.ROLES)
    assert used["collector"] > 0
    assert used["load generator"] > 0  # this process
