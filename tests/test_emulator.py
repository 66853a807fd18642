"""The Lambda emulator with the real awslambdaric: events, reuse, freeze, errors, limits."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsqltrace.app import ROOT
from dsqltrace.emulator.function import FunctionConfig
from dsqltrace.emulator.server import Emulator, Route
from tests.support import eventually, eventually_async, process_exited, process_stopped


def run_emulator(
    handler: str,
    scenario: Callable[[str, Emulator], Any],
    *,
    env: dict[str, str] | None = None,
    records: Path | None = None,
    **config: Any,
) -> tuple[Any, str]:
    """Start an emulator with one function, run ``scenario(url, emulator)``, stop; returns its result and the log."""
    log = io.StringIO()

    async def main() -> Any:
        function = FunctionConfig("fn", handler, env=env or {}, **config)
        emulator = Emulator(
            [function], [Route(frozenset(), "/", "fn")], task_root=ROOT, records=records, log=log
        )
        port = await emulator.start()
        try:
            return await scenario(f"http://127.0.0.1:{port}", emulator)
        finally:
            await emulator.stop()

    return asyncio.run(main()), log.getvalue()


async def get(url: str, path: str = "/", **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url + path, **kwargs)


def test_invocation_event_context_and_environment() -> None:
    async def scenario(url: str, emulator: Emulator) -> dict:
        response = await get(url, "/things/1?b=2&a=1&a=3", headers={"cookie": "c1=x; c2=y"})
        assert response.status_code == 200
        return response.json()

    seen, _ = run_emulator("tests.apps.emulated.echo", scenario, timeout_s=7, memory_mb=512)
    event = seen["event"]
    assert event["rawPath"] == "/things/1"
    assert event["rawQueryString"] == "b=2&a=1&a=3"
    assert event["queryStringParameters"] == {"b": "2", "a": "1,3"}
    assert event["cookies"] == ["c1=x", "c2=y"]
    assert "cookie" not in event["headers"]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["requestId"]
    assert seen["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:fn"
    assert 0 < seen["remaining_ms"] <= 7000
    env = seen["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["_HANDLER"] == "tests.apps.emulated.echo"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"].endswith("]" + f"{1:032x}")
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert env["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")


def test_environments_are_reused_and_created_when_all_are_busy(tmp_path: Path) -> None:
    records = tmp_path / "invocations.jsonl"

    async def scenario(url: str, emulator: Emulator) -> tuple[list[int], list[int]]:
        sequential = [int((await get(url)).headers["x-pid"]) for _ in range(3)]
        concurrent = await asyncio.gather(*(get(url) for _ in range(3)))
        return sequential, [int(r.headers["x-pid"]) for r in concurrent]

    (sequential, concurrent), _ = run_emulator(
        "tests.apps.emulated.echo", scenario, records=records
    )
    assert len(set(sequential)) == 1  # one warm environment serves one request at a time
    assert len(set(concurrent)) == 3  # three at once: two more environments (cold starts)
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    environments = [r for r in lines if r["record"] == "environment"]
    invocations = [r for r in lines if r["record"] == "invocation"]
    assert len(environments) == 3
    assert sum(1 for r in invocations if r["cold"]) == len(environments)
    assert all(r["outcome"] == "response" for r in invocations)
    assert all("init_ms" in r for r in invocations if r["cold"])


def test_result_without_status_code_is_a_200_json_body() -> None:
    async def scenario(url: str, emulator: Emulator) -> httpx.Response:
        return await get(url)

    response, _ = run_emulator("tests.apps.emulated.plain", scenario)
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}
    assert response.headers["content-type"] == "application/json"


def test_handler_exception_is_502_and_logged() -> None:
    async def scenario(url: str, emulator: Emulator) -> httpx.Response:
        return await get(url)

    response, log = run_emulator("tests.apps.emulated.fail", scenario)
    assert response.status_code == 502
    assert response.json() == {"Message": "Internal Server Error"}
    assert "handler failed on purpose" in log


def test_init_error_is_502_and_logged() -> None:
    async def scenario(url: str, emulator: Emulator) -> httpx.Response:
        return await get(url)

    response, log = run_emulator("tests.apps.broken_init.handler", scenario)
    assert response.status_code == 502
    assert "init failed on purpose" in log


def test_timeout_is_502_and_the_environment_is_replaced() -> None:
    async def scenario(url: str, emulator: Emulator) -> tuple[httpx.Response, float, int]:
        started = time.monotonic()
        response = await get(url)
        elapsed = time.monotonic() - started
        await eventually_async(lambda: not emulator.functions["fn"].environments, timeout=5)
        return response, elapsed, len(emulator.functions["fn"].environments)

    (response, elapsed, live), log = run_emulator(
        "tests.apps.emulated.slow", scenario, timeout_s=1.0, env={"SLOW_SECONDS": "10"}
    )
    assert response.status_code == 502
    assert elapsed >= 0.9  # it waited for the deadline, not less
    assert "Task timed out after 1.00 seconds" in log
    assert live == 0


def test_throttled_beyond_the_concurrency_limit() -> None:
    async def scenario(url: str, emulator: Emulator) -> list[int]:
        responses = await asyncio.gather(*(get(url) for _ in range(2)))
        return sorted(r.status_code for r in responses)

    statuses, _ = run_emulator(
        "tests.apps.emulated.slow", scenario, max_environments=1, env={"SLOW_SECONDS": "0.5"}
    )
    assert statuses == [200, 429]


def test_environment_is_frozen_between_invocations(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    async def scenario(url: str, emulator: Emulator) -> tuple[bool, bool]:
        response = await get(url)
        assert response.status_code == 200
        (env,) = emulator.functions["fn"].environments
        await eventually_async(lambda: process_stopped(env.process.pid), timeout=5)
        # The window in which the thread, due 0.3 s after the return, would have written.
        await asyncio.sleep(0.6)
        written_while_frozen = marker.exists()
        assert process_stopped(env.process.pid)
        assert (await get(url)).status_code == 200  # thaws: the first thread finishes now
        await eventually_async(marker.exists, timeout=5)
        return written_while_frozen, marker.exists()

    (while_frozen, after_thaw), _ = run_emulator(
        "tests.apps.emulated.background", scenario, env={"MARKER_FILE": str(marker)}
    )
    assert while_frozen is False
    assert after_thaw is True


def test_idle_environments_are_retired() -> None:
    async def scenario(url: str, emulator: Emulator) -> tuple[int, int]:
        await get(url)
        before = len(emulator.functions["fn"].environments)
        await eventually_async(lambda: not emulator.functions["fn"].environments, timeout=10)
        return before, len(emulator.functions["fn"].environments)

    (before, after), log = run_emulator("tests.apps.emulated.echo", scenario, idle_timeout_s=1.0)
    assert (before, after) == (1, 0)
    assert "retired" in log


def test_stop_leaves_no_process_behind() -> None:
    pids: list[int] = []

    async def scenario(url: str, emulator: Emulator) -> None:
        responses = await asyncio.gather(*(get(url) for _ in range(2)))
        pids.extend(int(r.headers["x-pid"]) for r in responses)

    run_emulator("tests.apps.emulated.echo", scenario)
    import os

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


_KILLED_EMULATOR = """
import asyncio, io
import httpx
from dsqltrace.app import ROOT
from dsqltrace.emulator.function import FunctionConfig
from dsqltrace.emulator.server import Emulator, Route

async def main():
    function = FunctionConfig("fn", "tests.apps.emulated.echo")
    emulator = Emulator([function], [Route(frozenset(), "/", "fn")], task_root=ROOT, log=io.StringIO())
    port = await emulator.start()
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"http://127.0.0.1:{port}/")
    print(response.headers["x-pid"], flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_killed_emulator_leaves_no_environment_behind() -> None:
    """SIGKILL to the emulator's process takes its environments along, frozen ones too
    (a stopped process would otherwise stay stopped forever)."""
    import select
    import subprocess
    import sys

    emulator = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EMULATOR],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    cgroups: list[Path] = []
    try:
        assert emulator.stdout is not None
        ready, _, _ = select.select([emulator.stdout], [], [], 30)
        assert ready, "the emulator did not answer its first request within 30 s"
        pid = int(emulator.stdout.readline())
        eventually(lambda: process_stopped(pid), timeout=5)  # frozen after its response
        cgroups = _own_cgroups(pid)
    finally:
        emulator.kill()
        emulator.wait(10)
    try:
        assert eventually(lambda: process_exited(pid), timeout=5)
    finally:
        for folder in cgroups:  # a killed emulator cannot remove them
            with contextlib.suppress(OSError):
                folder.rmdir()


def _own_cgroups(pid: int) -> list[Path]:
    """The emulator's cgroup v1 folders that process ``pid`` is in."""
    folders = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            folder = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            if "/dsqltrace/" in f"{folder}/" and folder.is_dir():
                folders.append(folder)
    return folders


def test_load_runner_signs_with_sigv4_and_the_url_sees_the_caller(monkeypatch) -> None:
    """`dsqltrace load --sign always`: requests carry SigV4 (service lambda), as AWS_IAM URLs need."""
    from dsqltrace.load import parse_mix, region_of, run_load

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASIGNEDLOADTEST00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "signing-secret")
    assert region_of("https://abc123.lambda-url.eu-west-1.on.aws/") == "eu-west-1"
    assert region_of("http://127.0.0.1:3000") is None

    seen: list = []

    async def capture() -> None:
        from dsqltrace.httpserver import HttpResponse, bound_port, start

        def answer(request):
            seen.append(request)
            return HttpResponse(201, b'{"id": "00000000-0000-0000-0000-000000000001"}')

        server = await start(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{bound_port(server)}"
        try:
            result = await run_load(
                url,
                url,
                users=1,
                duration_s=None,
                requests=3,
                mix=parse_mix("post=1"),
                out=None,
                sign="always",
                progress=False,
            )
        finally:
            server.close()
        assert result.requests == 3

    asyncio.run(capture())
    # Every request run_load sent carries a SigV4 signature that verifies (service lambda).
    from tests.support import assert_sigv4

    assert len(seen) == 3
    for request in seen:
        assert_sigv4(
            request.method,
            f"http://{request.headers['host']}{request.target}",
            request.headers,
            request.body,
            access_key="AKIASIGNEDLOADTEST00",
            secret_key="signing-secret",
            service="lambda",
            region="us-east-1",
        )

    captured: list[dict] = []

    async def signed(url: str, emulator: Emulator) -> None:
        import httpx as _httpx

        from dsqltrace.load import Signer

        headers = Signer("us-east-1").headers("GET", url + "/x", b"", {})
        assert headers["Authorization"].startswith(
            "AWS4-HMAC-SHA256 Credential=AKIASIGNEDLOADTEST00/"
        )
        assert "/us-east-1/lambda/aws4_request" in headers["Authorization"]
        async with _httpx.AsyncClient() as client:
            response = await client.get(url + "/x", headers=headers)
        captured.append(response.json())

    run_emulator("tests.apps.emulated.echo", signed)
    iam = captured[0]["event"]["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == "AKIASIGNEDLOADTEST00"


def test_paced_load_keeps_its_rate_whatever_the_answers_take() -> None:
    """Open loop: requests go out on schedule although each answer takes 100 ms; closed loop
    with one user sends what the answers allow.  Latency counts from the scheduled time."""
    from dsqltrace.httpserver import HttpResponse, bound_port, start
    from dsqltrace.load import parse_mix, run_load

    async def scenario() -> tuple[int, int, float]:
        async def slow(request):
            await asyncio.sleep(0.1)
            return HttpResponse(200, b'{"todos": [], "next": null}')

        server = await start(slow, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{bound_port(server)}"
        try:
            common = {"requests": None, "mix": parse_mix("get=1"), "out": None, "progress": False}
            closed = await run_load(url, url, users=1, duration_s=1.0, **common)
            paced = await run_load(url, url, users=20, duration_s=1.0, rate=40, **common)
        finally:
            server.close()
        return closed.requests, paced.requests, min(paced.latencies_ms)

    closed, paced, fastest = asyncio.run(scenario())
    assert closed <= 11  # one at a time, 100 ms each
    assert 30 <= paced <= 42  # 40 per second, on schedule
    assert fastest >= 100  # each one waited its 100 ms answer
