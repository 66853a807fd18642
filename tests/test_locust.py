"""The locustfile (loadtest/): headless against the local stack for a few seconds, and its
SigV4 signatures verified against a capture server, as AWS_IAM Function URLs check them."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.stack_fixture import new_stack
from tests.support import assert_sigv4

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def _locust(host: str, out: Path, env: dict[str, str], seconds: int = 4) -> dict[str, dict]:
    """Run Locust headless; its CSV statistics by request name."""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        "4",
        "--spawn-rate",
        "4",
        "--run-time",
        f"{seconds}s",
        "--host",
        host,
        "--csv",
        str(out / "todo"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out / "todo_stats.csv").exists(), done.stderr[-2000:]
    with (out / "todo_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_locust_drives_the_local_stack_with_the_todo_mix(tmp_path: Path) -> None:
    stack = new_stack()
    try:
        stats = _locust(
            stack.url, tmp_path, {"TODO_MIX": "post=1,get=1,get-one=1,patch=1"}, seconds=8
        )
    finally:
        stack.stop()
    for name in ("POST /todos", "GET /todos", "GET /todos/{id}", "PATCH /todos/{id}"):
        assert int(stats[name]["Request Count"]) > 0, stats.keys()
    assert int(stats["Aggregated"]["Failure Count"]) == 0


def test_locust_signs_every_request_with_sigv4(tmp_path: Path) -> None:
    from dsqltrace.httpserver import HttpResponse, bound_port, start

    seen: list = []
    loop = asyncio.new_event_loop()

    def answer(request):
        seen.append(request)
        return HttpResponse(201, b'{"id": "00000000-0000-0000-0000-000000000001"}')

    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = asyncio.run_coroutine_threadsafe(start(answer, "127.0.0.1", 0), loop).result(10)
    port = [bound_port(server)]
    env = {
        "TODO_SIGN": "always",
        "TODO_MIX": "post=1",
        "AWS_ACCESS_KEY_ID": "AKIASIGNEDLOCUSTTEST",
        "AWS_SECRET_ACCESS_KEY": "locust-signing-secret",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    stats = _locust(f"http://127.0.0.1:{port[0]}", tmp_path, env, seconds=2)
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    # The server sees at least what the statistics count (Locust counts finished requests).
    assert len(seen) >= int(stats["POST /todos"]["Request Count"]) > 0
    for request in seen:
        assert_sigv4(
            request.method,
            f"http://{request.headers['host']}{request.target}",
            request.headers,
            request.body,
            access_key="AKIASIGNEDLOCUSTTEST",
            secret_key="locust-signing-secret",
            service="lambda",
            region="us-east-1",
        )


@pytest.mark.parametrize("name", ["TODO_MIX", "TODO_READ_URL", "TODO_SIGN"])
def test_the_locustfile_documents_its_variables(name: str) -> None:
    text = LOCUSTFILE.read_text()
    assert f"``{name}``" in text and f'"{name}"' in text
