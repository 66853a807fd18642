"""One execution environment: a process of the real ``awslambdaric``, its APIs, its freezes.

The process is started with the variables Lambda sets (``AWS_LAMBDA_*``,
``_HANDLER``, ``AWS_LAMBDA_RUNTIME_API``...) and talks to the APIs that this
environment serves on its own loopback port:

- the Runtime API: ``/2018-06-01/runtime/invocation/next``,
  ``.../{id}/response``, ``.../{id}/error``, ``/2018-06-01/runtime/init/error``;
- the Extensions API: ``/2020-01-01/extension/register`` (accepted during init
  only, before the runtime's first ``next``), ``.../event/next`` (``INVOKE``
  events with ``requestId``, ``deadlineMs``, ``invokedFunctionArn``,
  ``tracing``), ``.../init/error`` and ``.../exit/error``.

As in Lambda: the caller gets the response as soon as the runtime posts it;
the environment is frozen (SIGSTOP to its process group) only once the
runtime *and every registered extension* have called ``next``, and takes no
new invocation before then; the time from the response to the last ``next``
is the post-runtime extension duration.  It is thawed (SIGCONT) for its next
invocation.  At shutdown an environment with an extension gets SIGTERM and
500 ms before SIGKILL; one without gets SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqltrace.emulator import subscription
from dsqltrace.emulator.limits import EnvironmentLimits
from dsqltrace.httpserver import HttpRequest, HttpResponse, bound_port, start

API = "/2018-06-01/runtime"
EXTENSIONS = "/2020-01-01/extension"
#: What Lambda gives the runtime between SIGTERM and SIGKILL with internal extensions only.
SHUTDOWN_GRACE_S = 0.5


@dataclass
class Invocation:
    """One invocation: its event, its deadline, and (once known) its outcome."""

    request_id: str
    event: bytes
    deadline_ms: int
    function_arn: str
    trace_id: str
    outcome: asyncio.Future[tuple[str, bytes]] = field(repr=False, default=None)  # type: ignore[assignment]
    #: Set when the runtime and every extension have called ``next`` after the response.
    finished: asyncio.Future[None] = field(repr=False, default=None)  # type: ignore[assignment]
    cold: bool = False
    environment: str = ""
    arrival_ns: int = 0
    assigned_ns: int = 0
    delivered_ns: int = 0
    response_ns: int = 0
    done_ns: int = 0
    #: CPU the environment used from the handoff to the last ``next`` (cgroups only).
    cpu_ns: int | None = None

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
        loop = asyncio.get_running_loop()
        inv.outcome = loop.create_future()
        inv.finished = loop.create_future()
        inv.arrival_ns = time.time_ns()
        return inv

    def settle(self, kind: str, payload: bytes = b"") -> None:
        if not self.outcome.done():
            self.response_ns = time.time_ns()
            self.outcome.set_result((kind, payload))

    def finish(self) -> None:
        if not self.finished.done():
            self.done_ns = time.time_ns()
            self.finished.set_result(None)

    def next_response(self) -> HttpResponse:
        """The Runtime API's answer to the ``next`` that hands this invocation over."""
        return HttpResponse(
            200,
            self.event,
            [
                ("Content-Type", "application/json"),
                ("Lambda-Runtime-Aws-Request-Id", self.request_id),
                ("Lambda-Runtime-Deadline-Ms", str(self.deadline_ms)),
                ("Lambda-Runtime-Invoked-Function-Arn", self.function_arn),
                ("Lambda-Runtime-Trace-Id", self.trace_id),
            ],
        )

    def invoke_event(self) -> bytes:
        """The ``INVOKE`` event extensions receive."""
        import json

        return json.dumps(
            {
                "eventType": "INVOKE",
                "deadlineMs": self.deadline_ms,
                "requestId": self.request_id,
                "invokedFunctionArn": self.function_arn,
                "tracing": {"type": "X-Amzn-Trace-Id", "value": self.trace_id},
            }
        ).encode()


@dataclass
class _Extension:
    """A registered extension: its events, and whether it is waiting in ``event/next``."""

    name: str
    events: list[bytes] = field(default_factory=list)
    waiter: asyncio.Future[None] | None = None
    waiting: bool = False
    #: The request id of the last invocation it was told of, and whether it called
    #: ``next`` since (done with it).
    told: str = ""
    done: bool = True


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
        limits: EnvironmentLimits | None = None,
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
        self._forwards: set[asyncio.Future[bool]] = set()
        self.limits = limits
        #: The CPUs the runtime process (and what it starts) may run on; None: any.
        self.cpus: frozenset[int] | None = None
        self.extensions: dict[str, _Extension] = {}
        self._runtime_waiting = False
        self._runtime_called_next = False

    # --- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Serve the Runtime API and start the runtime process (init begins)."""
        self._server = await start(self._runtime_api, "127.0.0.1", 0)
        env = dict(self._env)
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{bound_port(self._server)}"
        env.update(self._extra_env())
        # Looked up here: between fork and exec the child must not import anything.
        prctl, emulator_pid = _prctl(), os.getpid()
        self.process = await asyncio.create_subprocess_exec(
            *self._argv(),
            env=env,
            pass_fds=self._pass_fds(),
            cwd=self._cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # otlp-stdout lines reach CloudWatch's 256 KiB event limit; asyncio's default
            # line limit is 64 KiB.
            limit=1024 * 1024,
            start_new_session=True,
            preexec_fn=lambda: self._enter(prctl, emulator_pid),
        )
        self._tasks = [
            asyncio.ensure_future(self._pump_output()),
            asyncio.ensure_future(self._watch_exit()),
        ]

    def _enter(self, prctl: Callable[..., int] | None, emulator_pid: int) -> None:
        """In the runtime's process, before exec: its death with the emulator, its cgroups
        and its CPUs."""
        _die_with_parent(prctl, emulator_pid)
        if self.limits is not None:
            self.limits.enter()
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def _argv(self) -> list[str]:
        """The runtime process's command line."""
        return [sys.executable, "-m", "awslambdaric", self.handler]

    def _extra_env(self) -> dict[str, str]:
        return {}

    def _pass_fds(self) -> tuple[int, ...]:
        return ()

    def on_dead(self, callback: Callable[[Environment], None]) -> None:
        self._on_dead.append(callback)

    async def _pump_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            if subscription.is_envelope(line):  # log-based delivery: forwarded, not logged
                self._forwards.add(
                    task := asyncio.ensure_future(subscription.forward(line, self._log))
                )
                task.add_done_callback(self._forwards.discard)
                continue
            self._log(f"[{self.name}] {line.decode('utf-8', 'replace').rstrip()}")

    async def _watch_exit(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        if self.state != "dead":
            self._log(f"[{self.name}] runtime process {self._exit_text(code)}")
        self._die("crash")

    def _die(self, kind: str, *, release: bool = True) -> None:
        """Mark the environment dead; ``release`` answers the pending ``next`` calls (a
        shutdown does not: Lambda stops the process instead, as :meth:`stop` does)."""
        if self.state == "dead":
            return
        self.state = "dead"
        if self._current is not None:
            self._current.settle(kind)
        if release:
            self._release_waiters()
        if self._server is not None:
            self._server.close()
        for callback in self._on_dead:
            callback(self)

    def _release_waiters(self) -> None:
        waiters = [self._next_waiter] + [e.waiter for e in self.extensions.values()]
        for waiter in waiters:
            if waiter is not None and not waiter.done():
                waiter.cancel()  # a pending next that will never be answered

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def freeze(self) -> None:
        if self._freeze and not self.frozen and self.state == "idle" and self._current is None:
            self._signal(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._signal(signal.SIGCONT)
            self.frozen = False

    async def stop(self) -> None:
        """End the environment as Lambda does: with an extension registered, thaw, SIGTERM,
        then SIGKILL after 500 ms; without one, SIGKILL."""
        graceful = self._graceful()
        self._die("shutdown", release=False)
        self.thaw()
        if self.process is not None:
            if graceful:
                self._signal(signal.SIGTERM)
                exited = await self._exited_within(SHUTDOWN_GRACE_S)
                if exited is None:
                    self._log(f"[{self.name}] still running {SHUTDOWN_GRACE_S} s after SIGTERM")
                else:
                    self._log(f"[{self.name}] {exited} after SIGTERM")
            self._signal(signal.SIGKILL)
            await self.process.wait()
        self._release_waiters()
        if self.limits is not None:
            self.limits.remove()

    def _graceful(self) -> bool:
        """Whether stopping starts with SIGTERM: Lambda sends it with an extension registered."""
        return bool(self.extensions)

    async def _exited_within(self, seconds: float) -> str | None:
        """Wait up to ``seconds`` for the runtime to exit: how it ended, or None."""
        assert self.process is not None
        try:
            code = await asyncio.wait_for(self.process.wait(), seconds)
        except TimeoutError:
            return None
        return self._exit_text(code)

    def _exit_text(self, code: int) -> str:
        return f"exited with code {code}"

    async def reap(self) -> None:
        """Wait for the process to have exited and let go of its pipes (at the end of a run)."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self._signal(signal.SIGKILL)
            await self.process.wait()
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        transport = getattr(self.process, "_transport", None)
        if transport is not None:
            transport.close()

    def kill(self, reason: str) -> None:
        """End the environment at once (a timeout: Lambda discards the environment)."""
        self._log(f"[{self.name}] {reason}")
        self._die("timeout")
        self.thaw()
        self._signal(signal.SIGKILL)
        if self.limits is not None and self.process is not None:
            limits = self.limits

            async def remove_after_exit(process: asyncio.subprocess.Process) -> None:
                await process.wait()
                limits.remove()

            self._tasks.append(asyncio.ensure_future(remove_after_exit(self.process)))

    # --- invocations -----------------------------------------------------------
    def accepts(self) -> bool:
        """Whether an invocation can be given to it now (one at a time, when idle)."""
        return self.state == "idle"

    def assign(self, invocation: Invocation) -> None:
        """Give the environment its next invocation (thawing it)."""
        self._current = invocation
        self._delivered = False
        invocation.environment = self.name
        invocation.assigned_ns = time.time_ns()
        self.state = "busy"
        self.invocations += 1
        self.thaw()
        if self._next_waiter is not None and not self._next_waiter.done():
            self._next_waiter.set_result(None)

    def _tell_extensions(self, invocation: Invocation) -> None:
        """The ``INVOKE`` event, to every extension, as the runtime gets the invocation."""
        event = invocation.invoke_event()
        for extension in self.extensions.values():
            extension.events.append(event)
            extension.told = invocation.request_id
            extension.done = False
            if extension.waiter is not None and not extension.waiter.done():
                extension.waiter.set_result(None)

    def _respond(self, invocation: Invocation, kind: str, payload: bytes) -> None:
        """The runtime posted the outcome: the caller has it now."""
        invocation.settle(kind, payload)
        self._maybe_done()

    def _maybe_done(self) -> None:
        """Idle (and frozen) once the runtime and every extension have called ``next``."""
        current = self._current
        if current is None or self.state != "busy" or not current.outcome.done():
            return
        if not self._runtime_waiting:
            return
        if not all(e.waiting and e.done for e in self.extensions.values()):
            return
        self._current = None
        self.state = "idle"
        self.last_used = time.monotonic()
        if self.limits is not None and current.cpu_ns is not None:
            used = self.limits.cpu_ns()
            current.cpu_ns = None if used is None else used - current.cpu_ns
        current.finish()
        asyncio.get_running_loop().call_soon(self.freeze)

    def _maybe_init_done(self) -> None:
        if self.init_done_ns is not None or not self._runtime_waiting:
            return
        if all(e.waiting for e in self.extensions.values()):
            self.init_done_ns = time.time_ns()
            if self.limits is not None:
                self.limits.throttle()  # init had its burst; from now on, memory's share
            if self._next_waiter is not None and not self._next_waiter.done():
                self._next_waiter.set_result(None)

    # --- Runtime API -----------------------------------------------------------
    def _runtime_api(self, request: HttpRequest) -> HttpResponse | Any:
        path = request.path
        if path.startswith(EXTENSIONS):
            return self._extensions_api(request, path[len(EXTENSIONS) :])
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
                self._respond(current, parts[1], request.body)
                return HttpResponse(202, b'{"status":"OK"}')
        return HttpResponse(404)

    # --- Extensions API --------------------------------------------------------
    def _extensions_api(self, request: HttpRequest, path: str) -> HttpResponse | Any:
        if request.method == "POST" and path == "/register":
            return self._register(request)
        extension = self.extensions.get(request.headers.get("lambda-extension-identifier", ""))
        if extension is None:
            return _error(403, "Extension.UnknownExtensionIdentifier", "unknown extension id")
        if request.method == "GET" and path == "/event/next":
            return self._extension_next(extension)
        if request.method == "POST" and path in ("/init/error", "/exit/error"):
            kind = request.headers.get("lambda-extension-function-error-type", "")
            self._log(f"[{self.name}] extension {extension.name} {path[1:]}: {kind}")
            self._die("init_error" if path == "/init/error" else "crash")
            self._signal(signal.SIGKILL)
            return HttpResponse(202, b'{"status":"OK"}')
        return HttpResponse(404)

    def _register(self, request: HttpRequest) -> HttpResponse:
        import json

        name = request.headers.get("lambda-extension-name", "")
        if self._runtime_called_next or self.state == "dead":
            return _error(
                403, "Extension.InvalidStateTransition", "extensions register during init only"
            )
        if not name or any(e.name == name for e in self.extensions.values()):
            return _error(409, "Extension.AlreadyRegistered", f"cannot register {name!r}")
        try:
            events = json.loads(request.body or b"{}").get("events", [])
        except (ValueError, AttributeError):
            return _error(400, "InvalidRequestFormat", "the body is not a JSON object")
        if any(e not in ("INVOKE", "SHUTDOWN") for e in events):
            return _error(400, "Extension.InvalidEvent", f"unknown events {events!r}")
        extension_id = secrets.token_hex(16)
        self.extensions[extension_id] = _Extension(name)
        body = json.dumps(
            {"functionName": self._env.get("AWS_LAMBDA_FUNCTION_NAME", ""), "handler": self.handler}
        ).encode()
        return HttpResponse(
            200,
            body,
            [("Content-Type", "application/json"), ("Lambda-Extension-Identifier", extension_id)],
        )

    async def _extension_next(self, extension: _Extension) -> HttpResponse:
        extension.waiting = True
        extension.done = True  # it has called next since it was told of the invocation
        self._maybe_init_done()
        self._maybe_done()
        try:
            while not extension.events:
                if self.state == "dead":
                    return _error(503, "Extension.Shutdown", "environment is shutting down")
                extension.waiter = asyncio.get_running_loop().create_future()
                await extension.waiter
        finally:
            extension.waiting = False
        return HttpResponse(
            200,
            extension.events.pop(0),
            [("Content-Type", "application/json"), ("Lambda-Extension-Event-Identifier", "1")],
        )

    # --- the runtime's next ------------------------------------------------------
    async def _next(self) -> HttpResponse:
        self._runtime_called_next = True
        self._runtime_waiting = True
        self._maybe_init_done()
        self._maybe_done()
        try:
            # No invocation before init is over: the runtime and every extension waiting.
            while self._current is None or self._delivered or self.init_done_ns is None:
                if self.state == "dead":
                    return HttpResponse(503, b'{"errorMessage":"environment is shutting down"}')
                self._next_waiter = asyncio.get_running_loop().create_future()
                await self._next_waiter
        finally:
            self._runtime_waiting = False
        invocation = self._current
        self._delivered = True
        invocation.delivered_ns = time.time_ns()
        if self.limits is not None:
            invocation.cpu_ns = self.limits.cpu_ns()
        self._tell_extensions(invocation)
        return invocation.next_response()


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(prctl: Callable[..., int] | None, emulator_pid: int) -> None:
    """In a child before exec: be killed when the emulator's thread that started it ends.

    Else an emulator killed with SIGKILL (or any signal it does not handle) would leave
    its environments behind, and a frozen one stays stopped for good.  SnapStart
    restores are forked by their template, not by the emulator: this does not reach them.
    """
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != emulator_pid:  # the emulator died before the call
            os._exit(1)


def _error(status: int, kind: str, message: str) -> HttpResponse:
    import json

    body = json.dumps({"errorMessage": message, "errorType": kind}).encode()
    return HttpResponse(status, body, [("Content-Type", "application/json")])


def lambda_environment(
    *,
    function_name: str,
    handler: str,
    memory_mb: int,
    region: str,
    environment_name: str,
    runtime: str = "python3.13",
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
        # The runtime awslambdaric is told it is (its thread-polling mode for 3.12+), whatever
        # interpreter runs it here.
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{runtime}",
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
