"""The whole local stack in one object, for tests and scripted experiments.

``LocalStack`` starts the embedded PostgreSQL (migrated, reached the way DSQL
is: token as password, ``verify-full`` TLS), a collector process (which can be
restarted with a ``--fault``, or stopped), and the emulator with the Todo
functions on an event loop of its own; then it answers HTTP like a Function
URL.  Everything it starts, ``stop()`` stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsqltrace.app import OPENAPI_PATH, ROOT, openapi_document, todo_functions, todo_routes
from dsqltrace.emulator.function import FunctionConfig
from dsqltrace.emulator.server import Emulator, Route
from dsqltrace.httpserver import new_event_loop
from dsqltrace.pg import EmbeddedPostgres, free_port
from dsqltrace.report.runs import Span, read_spans
from dsqltrace.serve import local_database


class LocalStack:
    """PostgreSQL, a collector and the emulated functions, in ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        env: dict[str, str] | None = None,
        functions: Sequence[FunctionConfig] | None = None,
        routes: Sequence[Route] | None = None,
        timeout_s: float = 30.0,
        max_environments: int = 32,
        handlers: dict[str, str] | None = None,
        function_env: dict[str, dict[str, str]] | None = None,
        on_database: Callable[[LocalStack], None] | None = None,
        dsql_proxy: dict[str, Any] | None = None,
    ) -> None:
        self.folder = folder
        self.extra_env = dict(env or {})
        #: Per function: another handler (``"todo-insert": "mymodule.handler"``) or more variables.
        self._handlers = dict(handlers or {})
        self.function_env = dict(function_env or {})
        #: Called once the database is up, before the functions start (to add roles, env...).
        self._on_database = on_database
        #: DSQL's connection rules in front of PostgreSQL, with these limits
        #: (``dsqltrace.dsqlproxy.start``'s keywords); None: no proxy.
        self._dsql_proxy = dsql_proxy
        self.proxy: subprocess.Popen[str] | None = None
        #: What the proxy said when it stopped (its counts and CPU).
        self.proxy_report = ""
        self._functions = functions
        self._routes = routes
        self._timeout_s = timeout_s
        self._max_environments = max_environments
        self.postgres: EmbeddedPostgres | None = None
        self.db_env: dict[str, str] = {}
        self.collector_port = free_port()
        self._collector: subprocess.Popen[str] | None = None
        self._loop = new_event_loop()
        self._thread: threading.Thread | None = None
        self.emulator: Emulator | None = None
        self.url = ""

    @property
    def spans_file(self) -> Path:
        return self.folder / "spans.jsonl"

    @property
    def records_file(self) -> Path:
        return self.folder / "invocations.jsonl"

    def start(self) -> LocalStack:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.postgres, self.db_env = local_database(self.folder / "pg")
        if self._dsql_proxy is not None:
            from dsqltrace import dsqlproxy

            self.proxy = dsqlproxy.front(self.postgres, self.db_env, **self._dsql_proxy)
        if self._on_database is not None:
            self._on_database(self)
        self.set_collector("none")
        env = {
            **self.db_env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.collector_port}",
            **self.extra_env,
        }
        functions = list(
            self._functions
            or todo_functions(
                env=env, timeout_s=self._timeout_s, max_environments=self._max_environments
            )
        )
        functions = [
            dataclasses.replace(
                f,
                handler=self._handlers.get(f.name, f.handler),
                env={**f.env, **self.function_env.get(f.name, {})},
            )
            for f in functions
        ]
        self.emulator = Emulator(
            functions,
            self._routes or todo_routes(),
            task_root=ROOT,
            records=self.records_file,
            log=(self.folder / "emulator.log").open("a", encoding="utf-8"),
            documents={OPENAPI_PATH: openapi_document()},
        )
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(30)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def set_collector(self, fault: str | None) -> None:
        """Restart the collector with ``fault`` (``none``: healthy); None leaves it down."""
        if self._collector is not None:
            self._collector.terminate()
            self._collector.wait(10)
            self._collector = None
        if fault is None:
            return
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsqltrace.collector",
                "--port",
                str(self.collector_port),
                "--out",
                str(self.spans_file),
                "--fault",
                fault,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        if "listening" not in process.stdout.readline():
            raise RuntimeError("the collector did not start")
        self._collector = process

    def spans(self) -> list[Span]:
        return read_spans(self.spans_file)

    def wait_for_spans(self, predicate: Any, timeout: float = 10.0) -> list[Span]:
        """Spans, once ``predicate(spans)`` holds (the collector stores just after answering)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if predicate(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def invocations(self) -> list[dict[str, Any]]:
        if not self.records_file.exists():
            return []
        records = [json.loads(line) for line in self.records_file.read_text().splitlines() if line]
        return [r for r in records if r.get("record") == "invocation"]

    def sql(self, statement: str) -> str:
        assert self.postgres is not None
        return self.postgres.psql(statement)

    def stop(self) -> None:
        if self.emulator is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop).result(60)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self.set_collector(None)
        if self.proxy is not None:
            from dsqltrace import dsqlproxy

            self.proxy_report = dsqlproxy.stop(self.proxy)
            self.proxy = None
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
