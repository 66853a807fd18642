"""SnapStart in the emulator: init run once at publication, cold starts as restores of it.

*Publishing* starts a template process (:mod:`.snapstart_runtime`: the real
awslambdaric, ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``) that runs init,
registers extensions, runs the before-snapshot hooks and calls
``restore/next``; once the runtime and every extension wait, the snapshot is
taken: the template stays as it is, and its memory is what each restore
copies.  A *cold start* is a restore: the template forks, and the child (a
:class:`RestoredEnvironment`) runs the after-restore hooks and serves
invocations through its own Runtime API, with the extensions registered at
publication (registering is refused: there is no init).

What the fork reproduces of a microVM snapshot: all of memory, copied
(``random``'s state included: the fork's reseeding is undone); connections
made during init are dead in the copy (each inherited socket is replaced by
one whose peer is gone); the restore's time (``Restore Duration``, from the
restore request to the runtime's first ``next`` with every extension waiting).
What it does not: threads other than the forking one (a microVM keeps them;
the toolkit starts its delivery thread again, other extensions' threads would
be lost, and a restore whose extension never calls ``next`` fails after
:data:`RESTORE_TIMEOUT_S`); the restore's own cost in Lambda (loading the
snapshot's pages, which a fork does not pay); and the clock (a restore here
happens seconds after the snapshot, not days).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from typing import Any

from dsqltrace.emulator.environment import API, Environment, _error, _Extension
from dsqltrace.emulator.snapstart_runtime import FD_VARIABLE
from dsqltrace.httpserver import HttpRequest, HttpResponse, bound_port, start

__all__ = ["RESTORE_TIMEOUT_S", "RestoredEnvironment", "Snapshot", "SnapshotUnavailable"]

#: Lambda's limit for the after-restore hooks; a restore not over by then fails.
RESTORE_TIMEOUT_S = 10.0


class SnapshotUnavailable(Exception):
    """Publishing failed (init raised, or its process died), or the snapshot's process
    did not fork a copy in time: nothing to restore."""


class _Template(Environment):
    """The process that ran init once and forks a copy for each restore."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, freeze=False, **kwargs)
        self.control, self._child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.settimeout(RESTORE_TIMEOUT_S)  # a template that hangs fails the restore
        self.published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.published.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "dsqltrace.emulator.snapstart_runtime", self.handler]

    def _extra_env(self) -> dict[str, str]:
        return {
            "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
            FD_VARIABLE: str(self._child_end.fileno()),
        }

    def _pass_fds(self) -> tuple[int, ...]:
        return (self._child_end.fileno(),)

    async def start(self) -> None:
        await super().start()
        self._child_end.close()

    def _maybe_init_done(self) -> None:
        super()._maybe_init_done()
        if self.init_done_ns is not None and not self.published.done():
            self.published.set_result(None)

    def _die(self, kind: str, *, release: bool = True) -> None:
        if not self.published.done():
            self.published.set_exception(SnapshotUnavailable(f"init failed ({kind})"))
        super()._die(kind, release=release)

    def _runtime_api(self, request: HttpRequest) -> HttpResponse | Any:
        if request.method == "GET" and request.path == f"{API}/restore/next":
            return self._snapshot_ready()
        return super()._runtime_api(request)

    async def _snapshot_ready(self) -> HttpResponse:
        """The before-snapshot hooks ran: snapshot once every extension waits too."""
        self._runtime_called_next = True
        self._runtime_waiting = True
        self._maybe_init_done()
        try:
            await asyncio.shield(self.published)
        except SnapshotUnavailable:
            return HttpResponse(503, b'{"errorMessage":"init failed"}')
        return HttpResponse(200, b"")


class _ForkedProcess:
    """A restored copy: a child of the template, watched through a pidfd."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = loop.create_future()
        try:
            self._pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._pidfd = -1
            self._mark_exited()
            return
        loop.add_reader(self._pidfd, self._mark_exited)

    def _mark_exited(self) -> None:
        if self._pidfd >= 0:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        self.returncode = -1  # not our child: its status goes to the template
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait(self) -> int:
        await self._exited
        assert self.returncode is not None
        return self.returncode


class Snapshot:
    """A published version of one function: its template, and restores of it."""

    def __init__(self, name: str, **environment: Any) -> None:
        self.name = name
        self._template = _Template(f"{name}-snapshot", **environment)
        self._lock = asyncio.Lock()
        self.init_ms: float | None = None

    @property
    def extensions(self) -> dict[str, str]:
        """The extensions registered at publication: id to name."""
        return {eid: ext.name for eid, ext in self._template.extensions.items()}

    async def publish(self) -> None:
        """Run init once and take the snapshot; raises SnapshotUnavailable if init failed."""
        try:
            await self._template.start()
        except OSError as exc:  # the process could not even start
            raise SnapshotUnavailable(f"the snapshot's process did not start: {exc}") from None
        await self._template.published
        assert self._template.init_done_ns is not None
        self.init_ms = (self._template.init_done_ns - self._template.created_ns) / 1e6

    async def restore(self, api: str, cgroups: tuple[str, ...]) -> _ForkedProcess:
        """A new copy of the snapshot, talking to the Runtime API at ``api``."""
        read_end, write_end = os.pipe()
        request = json.dumps({"api": api, "cgroups": list(cgroups)}).encode()
        control = self._template.control

        def fork() -> int:
            socket.send_fds(control, [request], [write_end])
            answer = control.recv(4096)
            if not answer:
                raise SnapshotUnavailable("the snapshot's process has exited")
            return int(json.loads(answer)["pid"])

        try:
            async with self._lock:
                pid = await asyncio.to_thread(fork)
        except OSError as exc:  # a timeout included: the template did not answer in time
            os.close(read_end)
            raise SnapshotUnavailable(f"the snapshot's process did not fork: {exc}") from None
        finally:
            os.close(write_end)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1024 * 1024, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(read_end, "rb", 0)
        )
        return _ForkedProcess(pid, reader)

    async def stop(self) -> None:
        """End the template (its copies are stopped as environments)."""
        self._template.control.close()
        self._template._die("shutdown", release=False)
        self._template._signal(signal.SIGKILL)
        await self._template.reap()


class RestoredEnvironment(Environment):
    """An environment restored from a :class:`Snapshot` (a SnapStart cold start)."""

    def __init__(self, name: str, *, snapshot: Snapshot, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self._snapshot = snapshot
        self.restored = True

    async def start(self) -> None:
        """Serve this environment's APIs and restore a copy of the snapshot into it."""
        self._server = await start(self._runtime_api, "127.0.0.1", 0)
        self.extensions = {eid: _Extension(name) for eid, name in self._snapshot.extensions.items()}
        api = f"127.0.0.1:{bound_port(self._server)}"
        cgroups = self.limits.procs if self.limits is not None else ()
        self.created_ns = time.time_ns()
        try:
            self.process = await self._snapshot.restore(api, cgroups)  # type: ignore[assignment]
        except SnapshotUnavailable:
            self._die("init_error")  # forgotten by its function, its server closed
            if self.limits is not None:
                self.limits.remove()
            raise
        self._tasks = [
            asyncio.ensure_future(self._pump_output()),
            asyncio.ensure_future(self._watch_exit()),
            asyncio.ensure_future(self._restore_deadline()),
        ]

    async def _restore_deadline(self) -> None:
        await asyncio.sleep(RESTORE_TIMEOUT_S)
        if self.init_done_ns is None and self.state != "dead":
            self._log(f"[{self.name}] restore not over after {RESTORE_TIMEOUT_S:.0f} s")
            self._die("init_error")
            self._signal(signal.SIGKILL)

    def _exit_text(self, code: int) -> str:
        return "exited"  # its status goes to the snapshot's process, its parent

    def _register(self, request: HttpRequest) -> HttpResponse:
        return _error(
            403, "Extension.InvalidStateTransition", "extensions register during init only"
        )

    def _runtime_api(self, request: HttpRequest) -> HttpResponse | Any:
        if request.method == "POST" and request.path == f"{API}/restore/error":
            self._log(
                f"[{self.name}] restore error: {request.body.decode('utf-8', 'replace')[:2000]}"
            )
            self._die("init_error")
            self._signal(signal.SIGKILL)
            return HttpResponse(202, b'{"status":"OK"}')
        return super()._runtime_api(request)
