"""The Function URL front: one loopback port, requests routed to functions, results turned back.

A route is ``(methods, path prefix, function)``; the first that matches wins.
Errors come back as Lambda's Function URLs return them: 502 for a function
error, a timeout or an init error (the details go to the emulator log), 429
when the function is at its concurrency limit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dsqltrace.emulator.events import from_result, to_event
from dsqltrace.emulator.function import Function, FunctionConfig
from dsqltrace.httpserver import HttpRequest, HttpResponse, bound_port, json_response, start

_BAD_GATEWAY = b'{"Message":"Internal Server Error"}'


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]  # empty: any method
    prefix: str
    function: str

    def matches(self, request: HttpRequest) -> bool:
        return (not self.methods or request.method in self.methods) and request.path.startswith(
            self.prefix
        )


class Emulator:
    """Functions behind a Function URL front; invocation records go to ``records``."""

    def __init__(
        self,
        functions: Sequence[FunctionConfig],
        routes: Sequence[Route],
        *,
        task_root: Path,
        records: Path | None = None,
        log: TextIO | None = None,
        freeze: bool = True,
        documents: dict[str, bytes] | None = None,
    ) -> None:
        self._log_stream = log or sys.stderr
        #: Files the front serves itself at GET ``path`` (the API's OpenAPI description).
        self.documents = dict(documents or {})
        self._records = records.open("a", encoding="utf-8") if records else None
        self.functions = {
            c.name: Function(
                c, task_root=task_root, log=self.log, record=self.record, freeze=freeze
            )
            for c in functions
        }
        self.routes = list(routes)
        self._server: asyncio.Server | None = None
        self.port = 0
        self.invocations = 0

    def log(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime())
        self._log_stream.write(f"{stamp} {line}\n")
        self._log_stream.flush()

    def record(self, record: dict[str, Any]) -> None:
        if self._records is not None:
            self._records.write(json.dumps(record) + "\n")
            self._records.flush()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        for function in self.functions.values():
            function.start()
        self._server = await start(self._handle, host, port)
        self.port = bound_port(self._server)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(f.stop() for f in self.functions.values()))
        await asyncio.sleep(0.05)  # let the cancelled Runtime API requests finish
        if self._records is not None:
            self._records.close()
            self._records = None

    def environments_created(self) -> dict[str, int]:
        return {name: f.created for name, f in self.functions.items()}

    async def _handle(self, request: HttpRequest) -> HttpResponse:
        document = self.documents.get(request.path) if request.method == "GET" else None
        if document is not None:
            return json_response(200, document)
        route = next((r for r in self.routes if r.matches(request)), None)
        if route is None:
            return json_response(404, b'{"Message":"Not Found"}')
        function = self.functions[route.function]
        config = function.config
        event = to_event(request, url_id=config.name, region=config.region)
        self.invocations += 1
        outcome = await function.invoke(event)
        if outcome.kind == "response":
            response = from_result(outcome.payload)
            if outcome.invocation is not None:  # as Function URLs answer
                response.headers.append(("x-amzn-RequestId", outcome.invocation.request_id))
            return response
        if outcome.kind == "throttled":
            return json_response(429, b'{"Message":"Rate Exceeded."}')
        self.log(f"[{config.name}] invocation ended with {outcome.kind}: 502")
        return json_response(502, _BAD_GATEWAY)
