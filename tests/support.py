"""Test helpers: wait for a condition with a deadline, a clock tests move, a recording sender."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


class FakeClock:
    """A ``time.monotonic`` stand-in that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSender:
    """Wraps a sender and records the time budget of every export it is handed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.timeouts: list[float] = []

    def export(self, spans: Sequence[Any], timeout: float) -> None:
        self.timeouts.append(timeout)
        self.inner.export(spans, timeout)

    def close(self) -> None:
        self.inner.close()


async def eventually_async(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01
) -> T:
    """:func:`eventually` for asyncio code: the loop keeps running while it waits."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        await asyncio.sleep(interval)


def _thread_states(pid: int) -> list[str]:
    """The state letter of each thread of process ``pid`` (``/proc``); [] once it is gone."""
    from pathlib import Path

    states = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            stat = (task / "stat").read_text()
            states.append(stat.rsplit(")", 1)[1].split()[0])
    except FileNotFoundError:
        return []
    return states


def process_stopped(pid: int) -> bool:
    """True when every thread of process ``pid`` is stopped (SIGSTOP: state ``T``)."""
    states = _thread_states(pid)
    return bool(states) and all(s in ("T", "t") for s in states)


def process_exited(pid: int) -> bool:
    """True once process ``pid`` has exited (a zombie not yet reaped counts as exited)."""
    return all(s in ("Z", "X") for s in _thread_states(pid))


def assert_sigv4(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    service: str,
    region: str,
) -> None:
    """Fail unless the request (``headers`` with lower-case names) carries a SigV4
    signature that botocore, recomputing it from the request, finds valid."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={access_key}/")
    assert f"/{region}/{service}/aws4_request" in authorization
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    again = AWSRequest(method=method, url=url, data=body, headers={k: headers[k] for k in signed})
    again.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(
        Credentials(access_key, secret_key, headers.get("x-amz-security-token")), service, region
    )
    expected = auth.signature(auth.string_to_sign(again, auth.canonical_request(again)), again)
    assert authorization.endswith(f"Signature={expected}")
