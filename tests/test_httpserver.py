"""The local servers' HTTP/1.1 (llhttp through httptools), over raw sockets.

What users' clients send to a Function URL: chunked bodies, ``Expect:
100-continue``, pipelined requests, HEAD, and malformed requests; then bytes
from hypothesis at the parser boundary, after which the server must still
answer a well-formed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsqltrace.httpserver import MAX_BODY, MAX_HEAD, HttpRequest, HttpResponse, bound_port, start


class _Server:
    """The server on its own loop in a thread; records each request it handled."""

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.errors: list[dict] = []
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        ready = threading.Event()

        def handle(request: HttpRequest) -> HttpResponse:
            self.requests.append(request)
            body = json.dumps({"path": request.path, "size": len(request.body)}).encode()
            return HttpResponse(200, body, [("Content-Type", "application/json")])

        async def main() -> None:
            self._server = await start(handle, "127.0.0.1", 0)
            self.port = bound_port(self._server)
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(main())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    def send(self, data: bytes, *, read_until_close: bool = True, timeout: float = 5) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            if not read_until_close:
                return sock.recv(65536)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except (ConnectionResetError, TimeoutError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.stop()


def _statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def test_chunked_body_is_decoded(server) -> None:
    answer = server.send(
        b"POST /todos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert _statuses(answer) == [200]
    assert server.requests[-1].body == b"hello world"


def test_expect_100_continue_gets_its_interim_answer(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"body")
        assert b"HTTP/1.1 200" in sock.recv(65536)
    assert server.requests[-1].body == b"body"


def test_pipelined_requests_are_answered_in_order(server) -> None:
    answer = server.send(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert _statuses(answer) == [200, 200, 200]
    paths = [json.loads(body)["path"] for body in re.findall(rb'\{"path": [^}]*\}', answer)]
    assert paths == ["/one", "/two", "/three"]


def test_head_gets_no_body(server) -> None:
    answer = server.send(b"HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert _statuses(head) == [200] and body == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n", 431),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nabc" % (MAX_BODY + 1),
            413,
        ),
    ],
    ids=["malformed request line", "bad chunk size", "oversized header", "oversized body"],
)
def test_bad_requests_are_refused_and_the_connection_closed(server, request_bytes, status) -> None:
    seen = len(server.requests)
    answer = server.send(request_bytes)
    assert _statuses(answer) == [status]
    assert b"Connection: close" in answer
    assert len(server.requests) == seen  # the handler never saw it


def test_an_oversized_chunked_body_is_refused_before_it_is_read_whole(server) -> None:
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b"x" * (1024 * 1024))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        answer = b""
        try:
            for _ in range(MAX_BODY // (1024 * 1024) + 4):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed on us: refused before the end
        with contextlib.suppress(ConnectionResetError):
            answer = sock.recv(65536)
    assert answer == b"" or _statuses(answer) == [413]


def test_a_head_that_trickles_past_the_bound_is_refused(server) -> None:
    """The head bound holds across reads: one header line sent 1 KB at a time."""
    seen = len(server.requests)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(MAX_HEAD // 1024 + 8):
                sock.sendall(b"a" * 1024)
                time.sleep(0.001)  # separate reads on the server's side
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert _statuses(answer) == [431]
    assert len(server.requests) == seen


def test_many_pipelined_requests_in_one_large_write_are_all_answered(server) -> None:
    """A write of small pipelined requests larger than the head bound is not one big head."""
    one = b"GET /p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    count = MAX_HEAD * 2 // len(one) + 1
    answer = server.send(
        one * count + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert _statuses(answer) == [200] * (count + 1)


def test_a_large_body_after_a_head_split_across_reads_is_accepted(server) -> None:
    """The head's end split between two reads, then a body larger than the head bound."""
    body = b"\x00" * (MAX_HEAD * 3)  # no CRLF in it
    head = b"POST /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r" % len(
        body
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head)
        time.sleep(0.02)
        sock.sendall(b"\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert _statuses(answer) == [200]
    assert server.requests[-1].body == body


def test_a_truncated_head_then_close_leaves_the_server_serving(server) -> None:
    assert server.send(b"GET /half HTTP/1.1\r\nHost: x\r\nX-Par") == b""
    assert _statuses(server.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == [
        200
    ]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.builds(
            lambda method, target, extra: method + b" " + target + b" HTTP/1.1\r\n" + extra,
            st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"\x00", b"G\xffT"]),
            st.binary(min_size=1, max_size=64),
            st.binary(max_size=512),
        ),
    )
)
def test_no_bytes_crash_the_server(server, data) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(65536):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    assert server.errors == []
    assert _statuses(server.send(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == [
        200
    ]


def test_without_server_binaries_the_error_says_what_to_install(monkeypatch, tmp_path) -> None:
    """No wheel ships PostgreSQL with OpenSSL (the stack needs verify-full TLS): the fallback
    is the one command per platform, and DSQLTRACE_PG_BIN."""
    import glob

    from dsqltrace import pg

    monkeypatch.delenv("DSQLTRACE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no initdb, no pg_config on it
    monkeypatch.setattr(glob, "glob", lambda pattern: [])  # hide the system's installations
    with pytest.raises(RuntimeError) as caught:
        pg.find_bindir()
    message = str(caught.value)
    for command in (
        "sudo apt-get install postgresql",
        "sudo dnf install postgresql-server",
        "brew install postgresql@16",
        "DSQLTRACE_PG_BIN",
    ):
        assert command in message
    monkeypatch.setenv("DSQLTRACE_PG_BIN", str(tmp_path))
    with pytest.raises(RuntimeError, match="holds no initdb"):
        pg.find_bindir()
    monkeypatch.undo()
    assert (pg.find_bindir() / "initdb").exists()  # and with the binaries back, found
