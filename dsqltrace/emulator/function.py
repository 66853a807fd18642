"""A function's execution environments: reuse, cold starts, a concurrency limit, deadlines.

As in Lambda: one invocation at a time per environment; an idle environment
is reused; when all are busy a new one is created (a cold start) up to
``max_environments``, beyond which the invocation is throttled (429); an
environment idle for ``idle_timeout_s`` is retired; an invocation that runs
past its deadline ends its environment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsqltrace.emulator.environment import Environment, Invocation, lambda_environment


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
        self.created = 0
        self._retire_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.config.idle_timeout_s:
            self._retire_task = asyncio.ensure_future(self._retire_idle())

    async def invoke(self, event: dict[str, Any]) -> Outcome:
        """Run one invocation to its end (response, error, timeout...)."""
        payload = json.dumps(event).encode()
        invocation = Invocation.new(payload, self.config.timeout_s, self.config.arn)
        started = time.time_ns()
        env = next((e for e in self.environments if e.state == "idle"), None)
        if env is None:
            live = [e for e in self.environments if e.state != "dead"]
            if len(live) >= self.config.max_environments:
                self._record_invocation(invocation, started, "throttled", None)
                return Outcome("throttled", b"", None)
            env = await self._new_environment()
            invocation.cold = True
        env.assign(invocation)
        try:
            kind, body = await asyncio.wait_for(
                asyncio.shield(invocation.outcome), self.config.timeout_s
            )
        except TimeoutError:
            env.kill(f"Task timed out after {self.config.timeout_s:.2f} seconds")
            kind, body = "timeout", b""
        self._record_invocation(invocation, started, kind, env)
        return Outcome(kind, body, invocation)

    async def _new_environment(self) -> Environment:
        self.created += 1
        name = f"{self.config.name}-{self.created}"
        env = Environment(
            name,
            handler=self.config.handler,
            env=lambda_environment(
                function_name=self.config.name,
                handler=self.config.handler,
                memory_mb=self.config.memory_mb,
                region=self.config.region,
                environment_name=f"{self.created:032x}",
                extra=self.config.env,
                task_root=self._task_root,
            ),
            cwd=self._task_root,
            log=self._log,
            freeze=self._freeze,
        )
        self.environments.append(env)
        env.on_dead(self._forget)
        await env.start()
        self._record(
            {
                "record": "environment",
                "function": self.config.name,
                "environment": name,
                "created_ns": env.created_ns,
            }
        )
        return env

    def _forget(self, env: Environment) -> None:
        if env in self.environments:
            self.environments.remove(env)

    def _record_invocation(
        self, invocation: Invocation, started: int, kind: str, env: Environment | None
    ) -> None:
        record: dict[str, Any] = {
            "record": "invocation",
            "function": self.config.name,
            "request_id": invocation.request_id,
            "environment": env.name if env else None,
            "cold": invocation.cold,
            "start_ns": started,
            "end_ns": time.time_ns(),
            "outcome": kind,
        }
        if invocation.cold and env is not None and env.init_done_ns is not None:
            record["init_ms"] = (env.init_done_ns - env.created_ns) / 1e6
        self._record(record)

    async def _retire_idle(self) -> None:
        timeout = self.config.idle_timeout_s
        assert timeout
        while True:
            await asyncio.sleep(min(timeout, 1.0))
            now = time.monotonic()
            for env in list(self.environments):
                if env.state == "idle" and now - env.last_used > timeout:
                    self._log(f"[{env.name}] retired after {timeout:.0f} s idle")
                    await env.stop()

    async def stop(self) -> None:
        if self._retire_task is not None:
            self._retire_task.cancel()
        await asyncio.gather(*(env.stop() for env in list(self.environments)))
