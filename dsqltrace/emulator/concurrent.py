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
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

from dsqltrace.emulator.environment import API, SHUTDOWN_GRACE_S, Environment, Invocation
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

    def _group_alive(self) -> bool:
        """Whether any process of the environment (its session's group) still runs."""
        assert self.process is not None
        if self.process.returncode is None:
            return True
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # Only zombies may be left: /proc says whether any member still runs.
        return any(_running(pid, self.process.pid) for pid in _group_members(self.process.pid))

    async def stop(self) -> None:
        """SIGTERM to every worker (they deliver what is left), SIGKILL after the grace."""
        self._die("shutdown", release=False)
        if self.process is not None:
            self._signal(signal.SIGTERM)
            # The workers, not just awslambdaric's parent process (which SIGTERM ends at
            # once): each delivers what it kept before it exits.
            deadline = time.monotonic() + SHUTDOWN_GRACE_S
            while self._group_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if self._group_alive():
                self._log(f"[{self.name}] still running {SHUTDOWN_GRACE_S} s after SIGTERM")
            else:
                self._log(f"[{self.name}] workers exited after SIGTERM")
            self._signal(signal.SIGKILL)
            await self.process.wait()
        self._release_waiters()
        if self.limits is not None:
            self.limits.remove()


def _stat(pid: str | int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _running(pid: int, pgid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"
