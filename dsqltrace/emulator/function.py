"""A function's execution environments: reuse, cold starts, a concurrency limit, deadlines.

As in Lambda: one invocation at a time per environment; an idle environment
is reused (one whose extensions are still working after the response is not
idle yet); when all are busy a new one is created (a cold start) up to
``max_environments``, beyond which the invocation is throttled (429); an
environment idle for ``idle_timeout_s`` is retired; an invocation whose
invoke phase (post-response extension work included) runs past its deadline
ends its environment.  Each environment runs with memory's share of CPU and
its memory limit where :mod:`dsqltrace.emulator.limits` can apply them.

Every invocation leaves a record like Lambda's REPORT line (duration,
billed duration, init duration, post-runtime extension duration, max memory
used) and the times the caller's latency is made of: arrival, assignment to
a free or new environment, handed to the runtime, response, last ``next``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqltrace.emulator import limits as cgroups
from dsqltrace.emulator.concurrent import ConcurrentEnvironment
from dsqltrace.emulator.environment import Environment, Invocation, lambda_environment
from dsqltrace.emulator.snapshot import RestoredEnvironment, Snapshot, SnapshotUnavailable


@dataclass(frozen=True)
class FunctionConfig:
    """What Lambda knows of a function."""

    name: str
    handler: str
    memory_mb: int = 256
    timeout_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    max_environments: int = 32
    idle_timeout_s: float | None = None
    region: str = "us-east-1"
    account_id: str = "123456789012"
    #: Give each environment memory's share of CPU and the memory limit (where possible).
    limit_cpu: bool = True
    #: The Lambda runtime emulated (``AWS_EXECUTION_ENV``); the CDK stack's.  With 3.12+
    #: awslambdaric waits for invocations on a thread, so SIGTERM reaches Python code.
    runtime: str = "python3.13"
    #: Lambda Managed Instances: invocations one environment serves at once (awslambdaric
    #: forks that many workers); None: on-demand Lambda, one at a time, frozen between.
    max_concurrency: int | None = None
    #: SnapStart: init runs once at publication (:meth:`Function.start`), and cold starts
    #: are restores of its snapshot (:mod:`dsqltrace.emulator.snapshot`).
    snapstart: bool = False
    #: The CPUs its environments' processes run on (``sched_setaffinity``; not applied
    #: to SnapStart restores, which fork the snapshot); None: any.  Benchmarks give the
    #: functions CPUs of their own, as Lambda does: its front end never shares theirs.
    cpus: frozenset[int] | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"


@dataclass
class Outcome:
    """How an invocation ended: ``response``, ``error``, ``timeout``, ``init_error``,
    ``crash`` or ``throttled``; with the function's payload."""

    kind: str
    payload: bytes
    invocation: Invocation | None


class Function:
    """Runs invocations of one function in its environments."""

    def __init__(
        self,
        config: FunctionConfig,
        *,
        task_root: Path,
        log: Callable[[str], None],
        record: Callable[[dict[str, Any]], None],
        freeze: bool = True,
    ) -> None:
        self.config = config
        self._task_root = task_root
        self._log = log
        self._record = record
        self._freeze = freeze
        self.environments: list[Environment] = []
        #: Every environment this function made (the dead ones are reaped at stop).
        self._made: list[Environment] = []
        self.created = 0
        self._retire_task: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Future[None]] = set()
        self.snapshot: Snapshot | None = None
        self._published: asyncio.Future[None] | None = None
        self.limited = False
        if config.limit_cpu:
            reason = cgroups.unavailable()
            if reason is None:
                self.limited = True
            else:
                log(
                    f"[{config.name}] warning: no CPU or memory limits ({reason}); "
                    "environments run unthrottled"
                )

    def start(self) -> None:
        if self.config.idle_timeout_s:
            self._retire_task = asyncio.ensure_future(self._retire_idle())
        if self.config.snapstart and self._published is None:
            self._published = asyncio.ensure_future(self._publish())

    async def _publish(self) -> None:
        """Publish a version: run init once and take its snapshot (SnapStart)."""
        variables = self._variables("snapshot")
        variables["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
        self.snapshot = Snapshot(
            self.config.name,
            handler=self.config.handler,
            env=variables,
            cwd=self._task_root,
            log=self._log,
        )
        await self.snapshot.publish()
        self._log(
            f"[{self.config.name}] published: init ran once in {self.snapshot.init_ms:.0f} ms; "
            "cold starts restore its snapshot"
        )
        self._record(
            {
                "record": "snapshot",
                "function": self.config.name,
                "init_ms": round(self.snapshot.init_ms or 0.0, 3),
            }
        )

    async def published(self) -> Snapshot:
        """The function's snapshot, once published (SnapStart only)."""
        if self._published is None:
            self.start()
        assert self._published is not None
        await asyncio.shield(self._published)
        assert self.snapshot is not None
        return self.snapshot

    def _variables(self, environment_name: str) -> dict[str, str]:
        return lambda_environment(
            function_name=self.config.name,
            handler=self.config.handler,
            memory_mb=self.config.memory_mb,
            runtime=self.config.runtime,
            region=self.config.region,
            environment_name=environment_name,
            extra=self.config.env,
            task_root=self._task_root,
        )

    async def invoke(self, event: dict[str, Any]) -> Outcome:
        """Run one invocation until its response (error, timeout...); the invoke phase may go
        on after it (extensions), and its record is written when that ends."""
        payload = json.dumps(event).encode()
        invocation = Invocation.new(payload, self.config.timeout_s, self.config.arn)
        env = next((e for e in self.environments if e.accepts()), None)
        if env is None:
            live = [e for e in self.environments if e.state != "dead"]
            if len(live) >= self.config.max_environments:
                self._record_invocation(invocation, "throttled", None)
                return Outcome("throttled", b"", None)
            try:
                env = await self._new_environment()
            except SnapshotUnavailable as exc:
                self._log(f"[{self.config.name}] no snapshot to restore: {exc}")
                self._record_invocation(invocation, "init_error", None)
                return Outcome("init_error", b"", None)
            invocation.cold = True
        env.assign(invocation)
        deadline = time.monotonic() + self.config.timeout_s
        try:
            kind, body = await asyncio.wait_for(
                asyncio.shield(invocation.outcome), self.config.timeout_s
            )
        except TimeoutError:
            env.kill(f"Task timed out after {self.config.timeout_s:.2f} seconds")
            kind, body = "timeout", b""
        if kind in ("response", "error"):
            task = asyncio.ensure_future(self._complete(invocation, env, kind, deadline))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
        else:
            self._record_invocation(invocation, kind, env)
        return Outcome(kind, body, invocation)

    async def _complete(
        self, invocation: Invocation, env: Environment, kind: str, deadline: float
    ) -> None:
        """Wait for the runtime's and the extensions' ``next``, then write the record."""
        try:
            await asyncio.wait_for(
                asyncio.shield(invocation.finished), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            env.kill(
                f"Task timed out after {self.config.timeout_s:.2f} seconds "
                "(extensions still running after the response)"
            )
            kind = "timeout"
        except asyncio.CancelledError:
            kind = "shutdown"
        self._record_invocation(invocation, kind, env)

    async def _new_environment(self) -> Environment:
        self.created += 1
        name = f"{self.config.name}-{self.created}"
        variables = self._variables(f"{self.created:032x}")
        limits = cgroups.EnvironmentLimits(name, self.config.memory_mb) if self.limited else None
        common: dict[str, Any] = {
            "handler": self.config.handler,
            "env": variables,
            "cwd": self._task_root,
            "log": self._log,
        }
        env: Environment
        if self.config.snapstart:
            snapshot = await self.published()
            variables["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
            env = RestoredEnvironment(
                name, snapshot=snapshot, freeze=self._freeze, limits=limits, **common
            )
        elif self.config.max_concurrency:
            # Managed Instances run on EC2 instances: no memory/1769 CPU share.
            variables["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.config.max_concurrency)
            env = ConcurrentEnvironment(name, slots=self.config.max_concurrency, **common)
        else:
            env = Environment(name, freeze=self._freeze, limits=limits, **common)
        env.cpus = self.config.cpus
        self.environments.append(env)
        self._made.append(env)
        env.on_dead(self._forget)
        await env.start()
        self._record(
            {
                "record": "environment",
                "function": self.config.name,
                "environment": name,
                "created_ns": env.created_ns,
                "restored": isinstance(env, RestoredEnvironment),
            }
        )
        return env

    def _forget(self, env: Environment) -> None:
        if env in self.environments:
            self.environments.remove(env)

    def _record_invocation(
        self, invocation: Invocation, kind: str, env: Environment | None
    ) -> None:
        now = time.time_ns()
        record: dict[str, Any] = {
            "record": "invocation",
            "function": self.config.name,
            "request_id": invocation.request_id,
            "environment": env.name if env else None,
            "cold": invocation.cold,
            "start_ns": invocation.arrival_ns,
            "end_ns": invocation.response_ns or now,
            "outcome": kind,
            "memory_mb": self.config.memory_mb,
            "cpu_limited": bool(env is not None and env.limits is not None),
        }
        for stamp in ("assigned_ns", "delivered_ns", "response_ns", "done_ns"):
            value = getattr(invocation, stamp)
            if value:
                record[stamp] = value
        if invocation.cold and env is not None and env.init_done_ns is not None:
            phase = "restore_ms" if isinstance(env, RestoredEnvironment) else "init_ms"
            record[phase] = (env.init_done_ns - env.created_ns) / 1e6
        if invocation.assigned_ns and invocation.response_ns:
            start = max(invocation.assigned_ns, env.init_done_ns or 0) if env else 0
            end = invocation.done_ns or invocation.response_ns
            duration = (end - start) / 1e6
            record["duration_ms"] = round(duration, 3)
            record["billed_ms"] = math.ceil(duration)
            if invocation.done_ns:
                record["post_runtime_ms"] = round(
                    (invocation.done_ns - invocation.response_ns) / 1e6, 3
                )
        if invocation.done_ns and invocation.cpu_ns is not None:
            record["cpu_ms"] = round(invocation.cpu_ns / 1e6, 3)
        if env is not None and env.limits is not None:
            used = env.limits.max_memory_mb()
            if used is not None:
                record["max_memory_mb"] = round(used)
        self._record(record)
        if "duration_ms" in record:
            self._log(_report_line(record))

    async def _retire_idle(self) -> None:
        timeout = self.config.idle_timeout_s
        assert timeout
        while True:
            await asyncio.sleep(min(timeout, 1.0))
            now = time.monotonic()
            for env in list(self.environments):
                if env.state == "idle" and now - env.last_used > timeout:
                    self._log(f"[{env.name}] retired after {timeout:.0f} s idle")
                    # Its own task: stopping the function waits for it, never cuts its
                    # SIGTERM grace short.
                    retiring = asyncio.ensure_future(env.stop())
                    self._finishing.add(retiring)
                    retiring.add_done_callback(self._finishing.discard)
                    await asyncio.shield(retiring)

    async def stop(self) -> None:
        """Let invocations in flight finish their invoke phase, then shut every environment
        down (SIGTERM first where an extension is registered)."""
        if self._retire_task is not None:
            self._retire_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retire_task
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=min(self.config.timeout_s, 10.0))
        await asyncio.gather(*(env.stop() for env in list(self.environments)))
        for task in list(self._finishing):
            task.cancel()
        await asyncio.gather(*(env.reap() for env in self._made))
        if self._published is not None:
            if not self._published.done():
                self._published.cancel()
            if self.snapshot is not None:
                await self.snapshot.stop()


def _report_line(record: dict[str, Any]) -> str:
    """The record as Lambda's REPORT line (with the post-runtime extension duration)."""
    line = (
        f"[{record['environment']}] REPORT RequestId: {record['request_id']}\t"
        f"Duration: {record['duration_ms']:.2f} ms\tBilled Duration: {record['billed_ms']} ms\t"
        f"Memory Size: {record['memory_mb']} MB"
    )
    if "max_memory_mb" in record:
        line += f"\tMax Memory Used: {record['max_memory_mb']} MB"
    if "init_ms" in record:
        line += f"\tInit Duration: {record['init_ms']:.2f} ms"
    if "restore_ms" in record:
        line += (
            f"\tRestore Duration: {record['restore_ms']:.2f} ms"
            f"\tBilled Restore Duration: {math.ceil(record['restore_ms'])} ms"
        )
    if "post_runtime_ms" in record:
        line += f"\tPostRuntimeExtensionsDuration: {record['post_runtime_ms']:.2f} ms"
    return line
