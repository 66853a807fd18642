"""``dsqltrace load``: virtual users against the Todo API, locally or at deployed Function URLs.

Closed loop (the default): each virtual user sends one request at a time,
choosing the operation by the ``--mix`` weights, until the duration or the
request budget runs out; the load then follows the system's speed.  Open loop
(``--rate N``): requests arrive at N per second whatever the system does, on
at most ``--users`` connections, and each latency counts from the request's
scheduled time (a late start is part of it), so latency can be measured below
saturation.  Every request's client-side latency is written as one JSON line
(``{"start_ns", "op", "method", "path", "status", "latency_ms", "error",
"request_id"}``) for the report; the request id is the Function URL's
``x-amzn-RequestId``.  Requests to ``*.lambda-url.<region>.on.aws`` are signed with
SigV4 (service ``lambda``) when the URL uses AWS_IAM auth (``--sign auto``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

OPERATIONS = ("post", "get", "get-one", "patch")


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)


def parse_mix(text: str) -> dict[str, float]:
    """``post=1,get=1`` to weights; unknown operations are an error."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in OPERATIONS:
            raise ValueError(
                f"unknown operation {name!r} in --mix (choose from {', '.join(OPERATIONS)})"
            )
        weights[name] = float(value or 1)
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("--mix needs at least one operation with a positive weight")
    return weights


class Signer:
    """SigV4 for Function URLs with AWS_IAM auth (service ``lambda``)."""

    def __init__(self, region: str) -> None:
        import botocore.session

        self._region = region
        credentials = botocore.session.get_session().get_credentials()
        if credentials is None:
            raise RuntimeError("no AWS credentials found to sign requests (AWS_IAM auth)")
        self._credentials = credentials

    def headers(
        self, method: str, url: str, body: bytes, headers: dict[str, str]
    ) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), "lambda", self._region).add_auth(
            request
        )
        return dict(request.headers.items())


def region_of(url: str) -> str | None:
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if len(parts) >= 5 and parts[1] == "lambda-url" and host.endswith(".on.aws"):
        return parts[2]
    return None


async def run_load(
    write_url: str,
    read_url: str,
    *,
    users: int,
    duration_s: float | None,
    requests: int | None,
    mix: dict[str, float],
    out: Path | None,
    sign: str = "auto",
    progress: bool = True,
    timeout_s: float = 30.0,
    rate: float | None = None,
) -> LoadResult:
    """Drive the API; returns the totals (and writes one line per request to ``out``).

    ``rate`` (requests per second) makes it open-loop, on at most ``users`` connections."""
    import httpx

    signers: dict[str, Signer] = {}
    for url in {write_url, read_url}:
        region = region_of(url)
        if sign == "always" or (sign == "auto" and region):
            signers[url] = Signer(region or "us-east-1")
    result = LoadResult()
    started = time.monotonic()
    deadline = started + duration_s if duration_s else None
    budget = [requests if requests is not None else -1]
    ids: list[str] = []
    sink = out.open("a", encoding="utf-8") if out else None
    ops, weights = zip(*mix.items(), strict=True)

    def take() -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if budget[0] == 0:
            return False
        if budget[0] > 0:
            budget[0] -= 1
        return True

    async def user(n: int, verify: ssl.SSLContext) -> None:
        # One client and one connection per virtual user, as separate users would have:
        # httpcore scans every pooled connection on every request of a shared pool.
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=timeout_s, limits=limits, verify=verify) as client:
            rng = random.Random(n)
            while take():
                await one(client, rng, n, None)

    async def one(
        client: httpx.AsyncClient, rng: random.Random, n: int, scheduled: float | None
    ) -> None:
        op = rng.choices(ops, weights)[0]
        if op in ("get-one", "patch") and not ids:
            op = "post"
        method, base, path, body = request_for(op, write_url, read_url, rng, ids, n)
        url = base.rstrip("/") + path
        headers = {"content-type": "application/json"} if body is not None else {}
        data = json.dumps(body).encode() if body is not None else b""
        signer = signers.get(base)
        if signer is not None:
            headers = signer.headers(method, url, data, headers)
        start_ns = time.time_ns()
        t0 = time.perf_counter() if scheduled is None else scheduled
        status, error, request_id = 0, None, None
        try:
            response = await client.request(method, url, content=data or None, headers=headers)
            status = response.status_code
            request_id = response.headers.get("x-amzn-requestid")
            if op == "post" and status == 201:
                ids.append(response.json()["id"])
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        latency = (time.perf_counter() - t0) * 1000
        result.requests += 1
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.latencies_ms.append(latency)
        if status >= 500 or status == 0:
            result.errors += 1
        if sink is not None:
            record = {
                "start_ns": start_ns,
                "op": op,
                "method": method,
                "path": path,
                "status": status,
                "latency_ms": round(latency, 3),
                "error": error,
                "request_id": request_id,
            }
            sink.write(json.dumps(record) + "\n")

    async def paced(per_second: float, verify: ssl.SSLContext) -> None:
        limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
        async with httpx.AsyncClient(timeout=timeout_s, limits=limits, verify=verify) as client:
            rng = random.Random(0)
            in_flight: set[asyncio.Task[None]] = set()
            first = time.perf_counter()
            i = 0
            while take():
                scheduled = first + i / per_second
                i += 1
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.ensure_future(one(client, rng, i % max(users, 1), scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)

    busy_before = _cpu_times()
    verify = httpx.create_ssl_context()  # built once, shared by the users' clients
    reporter = (
        asyncio.ensure_future(_progress(result, started, duration_s, requests))
        if progress
        else None
    )
    if rate is not None:
        await paced(rate, verify)
    else:
        await asyncio.gather(*(user(n, verify) for n in range(users)))
    if reporter is not None:
        reporter.cancel()
    result.elapsed_s = time.monotonic() - started
    if out is not None:
        summary = {
            "users": users,
            "rate": rate,
            "elapsed_s": round(result.elapsed_s, 3),
            "requests": result.requests,
            "machine_cpu_busy": _busy(busy_before, _cpu_times()),
        }
        (out.parent / "load.json").write_text(json.dumps(summary))
    if progress:
        _draw(result, started, duration_s, requests, final=True)
    if sink is not None:
        sink.close()
    return result


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _busy(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU that was busy between two readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


#: The route each operation requests: the invocation span's name is ``{METHOD} {route}``.
ROUTES = {
    "post": "POST /todos",
    "get": "GET /todos",
    "get-one": "GET /todos/{id}",
    "patch": "PATCH /todos/{id}",
}


def request_for(
    op: str, write_url: str, read_url: str, rng: random.Random, ids: list[str], n: int
) -> tuple[str, str, str, dict[str, Any] | None]:
    """``(method, base URL, path, JSON body)`` of one request of operation ``op`` by user
    ``n`` (``get-one`` and ``patch`` pick one of ``ids``, the todos created so far)."""
    if op == "post":
        return (
            "POST",
            write_url,
            "/todos",
            {"name": f"todo from user {n}", "description": "load test"},
        )
    if op == "get":
        return "GET", read_url, "/todos?limit=10", None
    todo_id = rng.choice(ids)
    if op == "get-one":
        return "GET", read_url, f"/todos/{todo_id}", None
    return "PATCH", write_url, f"/todos/{todo_id}", {"completed": rng.random() < 0.5}


async def _progress(
    result: LoadResult, started: float, duration: float | None, requests: int | None
) -> None:
    while True:
        await asyncio.sleep(0.5)
        _draw(result, started, duration, requests)


def _draw(
    result: LoadResult,
    started: float,
    duration: float | None,
    requests: int | None,
    final: bool = False,
) -> None:
    elapsed = time.monotonic() - started
    if duration:
        fraction = min(1.0, elapsed / duration)
    elif requests:
        fraction = min(1.0, result.requests / requests)
    else:
        fraction = 0.0
    width = 30
    bar = "#" * int(fraction * width) + "." * (width - int(fraction * width))
    recent = sorted(result.latencies_ms[-2000:])
    p95 = recent[int(len(recent) * 0.95) - 1] if recent else 0.0
    line = (
        f"\r[{bar}] {elapsed:5.1f}s {result.requests} requests, {result.errors} errors, "
        f"p95 {p95:.1f} ms"
    )
    sys.stderr.write(line + ("\n" if final else ""))
    sys.stderr.flush()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="base URL (the insert function's, when split)")
    parser.add_argument(
        "--read-url", help="base URL for GETs (the select function's); default --url"
    )
    parser.add_argument(
        "--users",
        type=int,
        default=30,
        help="virtual users (default 30, the seed's); with --rate, the most connections",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: this many requests per second, whatever the answers take",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--requests", type=int, help="stop after this many requests instead")
    parser.add_argument(
        "--mix", default="post=1,get=1", help="operation weights (default post=1,get=1)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".local/client.jsonl"),
        help="where client-side latencies are appended",
    )
    parser.add_argument(
        "--sign",
        choices=("auto", "always", "never"),
        default="auto",
        help="SigV4-sign requests (auto: for *.lambda-url.*.on.aws)",
    )


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    try:
        mix = parse_mix(args.mix)
    except ValueError as exc:
        echo(f"error: {exc}")
        return 2
    result = asyncio.run(
        run_load(
            args.url,
            args.read_url or args.url,
            users=args.users,
            duration_s=None if args.requests else args.duration,
            requests=args.requests,
            mix=mix,
            out=args.out,
            sign=args.sign,
            rate=args.rate,
        )
    )
    statuses = dict(sorted(result.statuses.items()))
    echo(f"{result.requests} requests in {result.elapsed_s:.1f} s, statuses {statuses}")
    return 0 if result.requests and not result.server_errors else 1
