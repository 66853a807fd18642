"""A Lambda Managed Instances environment: one environment, ``max_concurrency`` invocations
at once, as awslambdaric 4.x serves them.

With ``AWS_LAMBDA_MAX_CONCURRENCY=N`` awslambdaric forks N worker processes;
each runs the function's init and then polls ``/invocation/next`` on its own
connection.  This environment hands each invocation to a waiting worker,
takes responses by request id, and never freezes (nothing freezes on Managed
Instances).  An invocation ends at its response: the Extensions API offers no
``INVOKE`` events there, so nothing runs "after the response" for it.  At
stop or retirement the workers get SIGTERM, then SIGKILL after the grace
period, so what their background delivery kept can still leave.

What it does not reproduce: per-invocation CPU accounting (the workers share
the environment's cgroup, when there is one, so no CPU figure is recorded per
invocation), and Lambda's per-invocation timeout (a timeout here ends the whole
environment, as in the on-demand emulation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from dsqltrace.emulator.environment import API, Environment, Invocation
from dsqltrace.httpserver import HttpRequest, HttpResponse

__all__ = ["ConcurrentEnvironment"]


class ConcurrentEnvironment(Environment):
    """An environment serving up to ``slots`` invocations at once (states: init, idle,
    busy while any invocation is in flight, dead); it takes more while a slot is free."""

    def __init__(self, name: str, *, slots: int, **kwargs: Any) -> None:
        super().__init__(name, freeze=False, **kwargs)
        self.slots = slots
        self._queued: deque[Invocation] = deque()
        self._inflight: dict[str, Invocation] = {}
        self._workers: deque[asyncio.Future[None]] = deque()

    # --- scheduling ------------------------------------------------------------
    def accepts(self) -> bool:
        return self.state != "dead" and len(self._inflight) < self.slots

    def assign(self, invocation: Invocation) -> None:
        invocation.environment = self.name
        invocation.assigned_ns = time.time_ns()
        self.invocations += 1
        self._inflight[invocation.request_id] = invocation
        self._queued.append(invocation)
        self._update_state()
        self._wake_one()

    def _update_state(self) -> None:
        if self.state == "dead" or self.init_done_ns is None:
            return
        self.state = "busy" if self._inflight else "idle"
        self.last_used = time.monotonic()

    def _wake_one(self) -> None:
        while self._workers:
            waiter = self._workers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def freeze(self) -> None:
        pass  # nothing freezes on Managed Instances

    # --- Runtime API ---------------------------------------------------------------
    def _runtime_api(self, request: HttpRequest) -> HttpResponse | Any:
        path = request.path
        if request.method == "POST" and path.startswith(f"{API}/invocation/"):
            parts = path[len(API) + len("/invocation/") :].split("/")
            if len(parts) == 2 and parts[1] in ("response", "error"):
                invocation = self._inflight.pop(parts[0], None)
                if invocation is None:
                    return HttpResponse(400, b'{"errorMessage":"unknown request id"}')
                if parts[1] == "error":
                    body = request.body.decode("utf-8", "replace")[:2000]
                    self._log(f"[{self.name}] invocation error: {body}")
                invocation.settle(parts[1], request.body)
                invocation.finish()  # no INVOKE events: the invocation ends at its response
                self._update_state()
                return HttpResponse(202, b'{"status":"OK"}')
        return super()._runtime_api(request)

    async def _next(self) -> HttpResponse:
        self._runtime_called_next = True
        if self.init_done_ns is None:  # the first worker ready ends the environment's init
            self.init_done_ns = time.time_ns()
            self.state = "idle"
            self._update_state()
        while not self._queued:
            if self.state == "dead":
                return HttpResponse(503, b'{"errorMessage":"environment is shutting down"}')
            waiter = asyncio.get_running_loop().create_future()
            self._workers.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                return HttpResponse(503, b'{"errorMessage":"environment is shutting down"}')
        invocation = self._queued.popleft()
        invocation.delivered_ns = time.time_ns()
        return invocation.next_response()

    def _release_waiters(self) -> None:
        super()._release_waiters()
        while self._workers:
            waiter = self._workers.popleft()
            if not waiter.done():
                waiter.cancel()

    def _die(self, kind: str, *, release: bool = True) -> None:
        if self.state != "dead":
            for invocation in self._inflight.values():
                invocation.settle(kind)
        super()._die(kind, release=release)

    def _graceful(self) -> bool:
        return True  # the workers deliver what they kept when SIGTERM comes

    def _signal(self, sig: int) -> None:
        # The workers can outlive awslambdaric's parent process (SIGTERM ends it at once):
        # signal the whole group whatever became of the parent.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    async def _exited_within(self, seconds: float) -> str | None:
        """Wait for every worker, not just the parent, to have exited."""
        assert self.process is not None
        deadline = time.monotonic() + seconds
        while _group_running(self.process.pid):
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.01)
        return "workers exited"


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        state, _ppid, group = text[text.rindex(")") + 2 :].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False
