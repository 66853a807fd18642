"""The Datadog APM test agent, started in its own virtualenv on free loopback ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_binary() -> str:
    """The agent's executable: ``$DDAPM_TEST_AGENT`` or the Makefile's ``.venv-agent``."""
    path = os.environ.get("DDAPM_TEST_AGENT") or str(ROOT / ".venv-agent/bin/ddapm-test-agent")
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"ddapm-test-agent not found at {path}: run `make install` (it builds .venv-agent)"
        )
    return path


class TestAgent:
    """A running ``ddapm-test-agent``: trace-agent API and OTLP/HTTP receiver."""

    __test__ = False

    def __init__(self) -> None:
        import tempfile

        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.trace_port = free_port()
        self.otlp_port = free_port()
        self.process = subprocess.Popen(
            [
                agent_binary(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.trace_port),
                "--otlp-http-port",
                str(self.otlp_port),
                "--otlp-grpc-port",
                str(free_port()),
                "--web-ui-port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: the agent logs every request, and a pipe nobody reads
            # fills up (64 KiB) and then blocks the agent.
            stderr=self._log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get(self.trace_url, "/test/session/traces")
                self.get(self.otlp_url, "/test/session/traces")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self._log.seek(0)
                    err = self._log.read().decode("utf-8", "replace")
                    self.stop()
                    raise RuntimeError(f"ddapm-test-agent did not start: {err[-2000:]}") from None
                time.sleep(0.1)

    @property
    def trace_url(self) -> str:
        return f"http://127.0.0.1:{self.trace_port}"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    @staticmethod
    def get(base: str, path: str) -> Any:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def clear(self) -> None:
        for base in (self.trace_url, self.otlp_url):
            with urllib.request.urlopen(base + "/test/session/clear", timeout=5):
                pass

    def datadog_traces(self) -> list[list[dict[str, Any]]]:
        """What arrived on the trace-agent API, as lists of spans per trace."""
        return list(self.get(self.trace_url, "/test/session/traces"))

    def otlp_requests(self) -> list[dict[str, Any]]:
        """What arrived on the OTLP/HTTP port, one ExportTraceServiceRequest (JSON) each."""
        return list(self.get(self.otlp_url, "/test/session/traces"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get(self.trace_url, "/test/session/requests"))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
