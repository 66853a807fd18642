"""One execution environment: a process of the real ``awslambdaric``, its Runtime API, its freezes.

The process is started with the variables Lambda sets (``AWS_LAMBDA_*``,
``_HANDLER``, ``AWS_LAMBDA_RUNTIME_API``...) and talks to a Runtime API that
this environment serves on its own loopback port:
``/2018-06-01/runtime/invocation/next``, ``.../{id}/response``,
``.../{id}/error`` and ``/2018-06-01/runtime/init/error``.  As in Lambda, the
environment is frozen (SIGSTOP to its process group) as soon as its response
is in, and thawed (SIGCONT) when its next invocation is assigned, so nothing
runs between invocations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqltrace.httpserver import HttpRequest, HttpResponse, bound_port, start

API = "/2018-06-01/runtime"


@dataclass
class Invocation:
    """One invocation: its event, its deadline, and (once known) its outcome."""

    request_id: str
    event: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    outcome: asyncio.Future[tuple[str, bytes]] = field(repr=False, default=None)  # type: ignore[assignment]
    cold: bool = False
    environment: str = ""

    @classmethod
    def new(cls, event: bytes, timeout_s: float, function_arn: str) -> Invocation:
        now = time.time()
        trace = (
            f"Root=1-{int(now):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"
        )
        inv = cls(
            request_id=_request_id(),
            event=event,
            deadline_ms=int((now + timeout_s) * 1000),
            function_arn=function_arn,
            trace_id=trace,
        )
        inv.outcome = asyncio.get_running_loop().create_future()
        return inv

    def settle(self, kind: str, payload: bytes = b"") -> None:
        if not self.outcome.done():
            self.outcome.set_result((kind, payload))


def _request_id() -> str:
    import uuid

    return str(uuid.uuid4())


class Environment:
    """An execution environment of one function (states: init, busy, idle, dead)."""

    def __init__(
        self,
        name: str,
        *,
        handler: str,
        env: dict[str, str],
        cwd: Path,
        log: Callable[[str], None],
        freeze: bool = True,
    ) -> None:
        self.name = name
        self.handler = handler
        self._env = env
        self._cwd = cwd
        self._log = log
        self._freeze = freeze
        self.state = "init"
        self.frozen = False
        self.created_ns = time.time_ns()
        self.init_done_ns: int | None = None
        self.last_used = time.monotonic()
        self.invocations = 0
        self._current: Invocation | None = None
        self._delivered = False
        self._next_waiter: asyncio.Future[None] | None = None
        self._server: asyncio.Server | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._on_dead: list[Callable[[Environment], None]] = []
        self._tasks: list[asyncio.Future[None]] = []

    # --- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Serve the Runtime API and start the runtime process (init begins)."""
        self._server = await start(self._runtime_api, "127.0.0.1", 0)
        env = dict(self._env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{bound_port(self._server)}"
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "awslambdaric",
            self.handler,
            env=env,
            cwd=self._cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._tasks = [
            asyncio.ensure_future(self._pump_output()),
            asyncio.ensure_future(self._watch_exit()),
        ]

    def on_dead(self, callback: Callable[[Environment], None]) -> None:
        self._on_dead.append(callback)

    async def _pump_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self._log(f"[{self.name}] {line.decode('utf-8', 'replace').rstrip()}")

    async def _watch_exit(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        if self.state != "dead":
            self._log(f"[{self.name}] runtime process exited with code {code}")
        self._die("crash")

    def _die(self, kind: str) -> None:
        if self.state == "dead":
            return
        self.state = "dead"
        if self._current is not None:
            self._current.settle(kind)
        if self._next_waiter is not None and not self._next_waiter.done():
            self._next_waiter.cancel()  # the runtime's pending /next will never be answered
        if self._server is not None:
            self._server.close()
        for callback in self._on_dead:
            callback(self)

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def freeze(self) -> None:
        if self._freeze and not self.frozen and self.state == "idle":
            self._signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._signal(signal.SIGCONT)
            self.frozen = False

    async def stop(self) -> None:
        """End the environment: thaw, SIGTERM, then SIGKILL if it lingers."""
        self._die("shutdown")
        self.thaw()
        self._signal(signal.SIGTERM)
        if self.process is not None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self.process.wait()

    def kill(self, reason: str) -> None:
        """End the environment at once (a timeout: Lambda discards the environment)."""
        self._log(f"[{self.name}] {reason}")
        self._die("timeout")
        self.thaw()
        self._signal(signal.SIGKILL)

    # --- invocations -----------------------------------------------------------
    def assign(self, invocation: Invocation) -> None:
        """Give the environment its next invocation (thawing it)."""
        self._current = invocation
        self._delivered = False
        invocation.environment = self.name
        self.state = "busy"
        self.invocations += 1
        self.thaw()
        if self._next_waiter is not None and not self._next_waiter.done():
            self._next_waiter.set_result(None)

    def _finish(self, invocation: Invocation, kind: str, payload: bytes) -> None:
        invocation.settle(kind, payload)
        if self._current is invocation:
            self._current = None
        if self.state == "busy":
            self.state = "idle"
            self.last_used = time.monotonic()
            asyncio.get_running_loop().call_soon(self.freeze)

    # --- Runtime API -----------------------------------------------------------
    def _runtime_api(self, request: HttpRequest) -> HttpResponse | Any:
        path = request.path
        if request.method == "GET" and path == f"{API}/invocation/next":
            return self._next()
        if request.method == "POST" and path == f"{API}/init/error":
            self._log(f"[{self.name}] init error: {request.body.decode('utf-8', 'replace')[:2000]}")
            self._die("init_error")
            self._signal(signal.SIGKILL)
            return HttpResponse(202, b'{"status":"OK"}')
        if request.method == "POST" and path.startswith(f"{API}/invocation/"):
            parts = path[len(API) + len("/invocation/") :].split("/")
            if len(parts) == 2 and parts[1] in ("response", "error"):
                current = self._current
                if current is None or current.request_id != parts[0]:
                    return HttpResponse(400, b'{"errorMessage":"unknown request id"}')
                if parts[1] == "error":
                    error_type = request.headers.get("lambda-runtime-function-error-type", "")
                    self._log(
                        f"[{self.name}] invocation error {error_type}: "
                        f"{request.body.decode('utf-8', 'replace')[:2000]}"
                    )
                self._finish(current, parts[1], request.body)
                return HttpResponse(202, b'{"status":"OK"}')
        return HttpResponse(404)

    async def _next(self) -> HttpResponse:
        if self.init_done_ns is None:
            self.init_done_ns = time.time_ns()
        while self._current is None or self._delivered:
            if self.state == "dead":
                return HttpResponse(503, b'{"errorMessage":"environment is shutting down"}')
            self._next_waiter = asyncio.get_running_loop().create_future()
            await self._next_waiter
        invocation = self._current
        self._delivered = True
        return HttpResponse(
            200,
            invocation.event,
            [
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Aws-Request-Id", invocation.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(invocation.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", invocation.function_arn),
                ("Lambda-Runtime-Trace-Id", invocation.trace_id),
            ],
        )


def lambda_environment(
    *,
    function_name: str,
    handler: str,
    memory_mb: int,
    region: str,
    environment_name: str,
    extra: dict[str, str],
    task_root: Path,
) -> dict[str, str]:
    """The variables Lambda sets for a Python runtime, plus the function's own."""
    day = time.strftime("%Y/%m/%d", time.gmtime())
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": str(task_root),
        "PYTHONUNBUFFERED": "1",
        "LAMBDA_TASK_ROOT": str(task_root),
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}",
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{day}/[$LATEST]{environment_name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    env.update(extra)
    return env
