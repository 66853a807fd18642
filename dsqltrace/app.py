"""The Todo API as the emulator runs it: two functions, routed as the infra routes them.

``todo-select`` serves GET (and HEAD); ``todo-insert`` serves the rest.  In AWS
each has its own Function URL; locally one port carries both, split by method.
"""

from __future__ import annotations

import os
from pathlib import Path

from dsqltrace.emulator.function import FunctionConfig
from dsqltrace.emulator.server import Route

ROOT = Path(__file__).resolve().parent.parent
INSERT_FUNCTION = "todo-insert"
SELECT_FUNCTION = "todo-select"
#: Prefixes of the variables the functions inherit from the emulator's environment.
PASSED_THROUGH = (
    "OTEL_",
    "DD_",
    "DSQLTRACE_",
    "PG",
    "DB_",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


def function_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_THROUGH)}
    for name in ("DATABASE_URL", "CLUSTER_ENDPOINT"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    env.update(extra)
    return env


def todo_functions(
    *,
    env: dict[str, str],
    memory_mb: int = 256,
    timeout_s: float = 30.0,
    max_environments: int = 32,
    idle_timeout_s: float | None = None,
    limit_cpu: bool = True,
    max_concurrency: int | None = None,
    snapstart: bool = False,
) -> list[FunctionConfig]:
    return [
        FunctionConfig(
            name,
            handler,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            env=env,
            max_environments=max_environments,
            idle_timeout_s=idle_timeout_s,
            limit_cpu=limit_cpu,
            max_concurrency=max_concurrency,
            snapstart=snapstart,
        )
        for name, handler in (
            (INSERT_FUNCTION, "handlers.insert.handler"),
            (SELECT_FUNCTION, "handlers.select.handler"),
        )
    ]


#: The Todo API's OpenAPI 3.1 description, served by `dsqltrace serve` at this path.
OPENAPI_PATH = "/openapi.json"


def openapi_document() -> bytes:
    return (ROOT / "handlers" / "openapi.json").read_bytes()


def todo_routes() -> list[Route]:
    return [
        Route(frozenset({"GET", "HEAD"}), "/", SELECT_FUNCTION),
        Route(frozenset(), "/", INSERT_FUNCTION),
    ]
