"""Aurora DSQL's connection rules in front of the local PostgreSQL: a small wire-protocol proxy.

The functions connect to it exactly as they connect to DSQL (TLS with
``sslmode=verify-full``, the IAM token as the password); it answers what
DSQL would and passes everything else to the real PostgreSQL behind it:

- **the IAM token, checked at connect.**  The password must be a SigV4
  presigned ``DbConnectAdmin`` (user ``admin``) or ``DbConnect`` URL signed for
  this endpoint's host and region, not expired (``X-Amz-Date`` plus
  ``X-Amz-Expires``), and, when the proxy knows the secret key it was signed
  with, correctly signed.  A bad token gets a FATAL ``28P01``.  So the seed's
  bug (one cold-start token reused after it expired) fails here as on DSQL.
- **the connection rate**: a token bucket of ``--rate`` new connections a
  second with a burst of ``--burst`` (DSQL: 100, burst 1,000); beyond it a
  FATAL ``53400`` ("rate exceeded").  And ``--max-connections`` open at once
  (DSQL: 10,000; beyond it ``53300``).
- **the maximum connection age** (``--max-age``; DSQL: 60 minutes): the
  connection is then closed with a FATAL ``57P01``, whatever it is doing.

Run it with ``python -m dsqltrace.dsqlproxy`` (``dsqltrace serve --dsql-proxy``
and ``dsqltrace demo`` start it).  ``DSQLTRACE_PROXY_SECRET_KEY``: the secret
key the local stack signs tokens with, so that signatures are checked too.
The SQLSTATEs are DSQL's; the error texts are modelled on its documentation.
The backend is reached over its Unix socket, with the client's startup
parameters, and authenticates by trust.  The proxy serves PostgreSQL's TLS
negotiation (``SSLRequest``), not libpq 17's direct TLS.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hmac
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["Proxy", "ProxyConfig", "check_token", "front", "main", "start", "stop"]

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_PROTOCOL_3 = 196608


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy enforces (DSQL's values by default)."""

    backend_socket: str
    cert_file: str
    key_file: str
    host: str = "localhost"
    region: str = "us-east-1"
    rate: float = 100.0
    burst: int = 1000
    max_connections: int = 10_000
    max_age_s: float = 3600.0
    #: The secret key tokens are signed with, when known (the local stack's own).
    secret_key: str | None = None
    #: Refuse tokens signed longer ago than this too (None: only their own expiry), so
    #: that tests can show an expired token in seconds instead of 15 minutes.
    token_max_age_s: float | None = None
    #: The most a client may take from connecting to sending its password.
    startup_timeout_s: float = 10.0


def check_token(
    token: str, user: str, config: ProxyConfig, now: datetime.datetime | None = None
) -> str | None:
    """Why DSQL would refuse ``token`` for ``user`` at this endpoint, or None."""
    host, sep, query = token.partition("/?")
    if not sep:
        return "the password is not an IAM auth token"
    if host != config.host:
        return "the token was signed for another endpoint"
    params = dict(parse_qsl(query, keep_blank_values=True))
    action = "DbConnectAdmin" if user == "admin" else "DbConnect"
    if params.get("Action") != action:
        return f"the token does not allow {action}"
    credential = params.get("X-Amz-Credential", "").split("/")
    if len(credential) != 5 or credential[2] != config.region or credential[3] != "dsql":
        return "the token was signed for another region or service"
    try:
        signed = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.UTC
        )
        expires = int(params["X-Amz-Expires"])
    except (KeyError, ValueError):
        return "the token has no valid date"
    now = now or datetime.datetime.now(datetime.UTC)
    lifetime = expires if config.token_max_age_s is None else min(expires, config.token_max_age_s)
    if now > signed + datetime.timedelta(seconds=lifetime):
        return "the token has expired"
    if signed > now + datetime.timedelta(minutes=5):
        return "the token is dated in the future"
    if config.secret_key is not None:
        from handlers.token import presign

        expected = presign(
            host,
            config.region,
            action,
            credential[0],
            config.secret_key,
            params.get("X-Amz-Security-Token"),
            expires_in=expires,
            now=signed,
        )
        wanted = dict(parse_qsl(expected.partition("/?")[2])).get("X-Amz-Signature", "")
        if not hmac.compare_digest(wanted, params.get("X-Amz-Signature", "")):
            return "the token's signature does not match"
    return None


def _error(code: str, message: str) -> bytes:
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class _Closed(Exception):
    """The peer closed the connection."""


#: The longest startup or password message accepted (libpq's are well under 1 KiB, a
#: token about 1.5 KiB).
_MAX_MESSAGE = 16 * 1024


def _read(sock: socket.socket, n: int) -> bytes:
    if not 0 <= n <= _MAX_MESSAGE:
        raise _Closed  # a length no client sends: the connection is dropped
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise _Closed
        data += chunk
    return data


class Proxy:
    """The proxy: its token bucket, its open connections, its counters.

    One thread per client connection (TLS and the startup in it), and one more
    per connection to carry the backend's answers: blocking sockets, so that
    relaying a query costs two ``recv``/``send`` pairs in C, not an event loop's
    Python-level TLS.
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._tokens = float(config.burst)
        self._refilled = time.monotonic()
        self.open = 0
        self._sockets: set[socket.socket] = set()
        self.counts = {"accepted": 0, "rate": 0, "limit": 0, "token": 0, "aged": 0}
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(config.cert_file, config.key_file)

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(
            float(self.config.burst), self._tokens + (now - self._refilled) * self.config.rate
        )
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def serve_forever(self, listener: socket.socket, stop: threading.Event) -> None:
        """Accept connections until ``stop`` is set."""
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # The handshake, the startup and the password within one bound: a client that
            # connects and says nothing does not hold a thread for ever.
            client.settimeout(self.config.startup_timeout_s)
            # Small messages both ways (the handshake, one query at a time): no Nagle delay.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def abort_all(self) -> None:
        """Drop every connection at once (the proxy is stopping)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        """Known to :meth:`abort_all` while in use; closed afterwards."""
        with self._lock:
            self._sockets.add(sock)
        try:
            yield sock
        finally:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def serve(self, client: socket.socket) -> None:
        try:
            with self._tracked(client):
                self._serve(client)
        except (_Closed, ConnectionError, ssl.SSLError, OSError, ValueError, struct.error):
            pass  # a client that went away or sent what no PostgreSQL client sends

    def _serve(self, plain: socket.socket) -> None:
        length, code = struct.unpack("!II", _read(plain, 8))
        if code == _CANCEL_REQUEST:
            self._cancel(struct.pack("!II", length, code) + _read(plain, length - 8))
            return
        if code == _GSSENC_REQUEST:
            plain.sendall(b"N")
            length, code = struct.unpack("!II", _read(plain, 8))
        if code != _SSL_REQUEST:
            plain.sendall(_error("28000", "connections to Aurora DSQL must use TLS"))
            return
        plain.sendall(b"S")
        with self._tracked(self._tls.wrap_socket(plain, server_side=True)) as client:
            self._after_tls(client)

    def _after_tls(self, client: socket.socket) -> None:
        length, code = struct.unpack("!II", _read(client, 8))
        startup = _read(client, length - 8)
        if code == _CANCEL_REQUEST:
            self._cancel(struct.pack("!II", length, code) + startup)
            return
        if code != _PROTOCOL_3:
            client.sendall(_error("08P01", "unsupported protocol version"))
            return
        parts = startup.split(b"\0")
        params = dict(zip(parts[0:-2:2], parts[1:-2:2], strict=True))
        user = params.get(b"user", b"").decode()
        client.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        kind = _read(client, 1)
        (size,) = struct.unpack("!I", _read(client, 4))
        password = _read(client, size - 4).rstrip(b"\0").decode("utf-8", "replace")
        if kind != b"p":
            return
        refusal = self._admit(user, password)
        if refusal is not None:
            client.sendall(_error(*refusal))
            return
        client.settimeout(None)  # admitted: queries take what they take, up to the max age
        try:
            self._relay(client, startup)
        finally:
            with self._lock:
                self.open -= 1

    def _admit(self, user: str, token: str) -> tuple[str, str] | None:
        with self._lock:
            if not self._take():
                self.counts["rate"] += 1
                return "53400", "rate exceeded: too many new connections per second"
            if self.open >= self.config.max_connections:
                self.counts["limit"] += 1
                return "53300", "too many connections"
            why = check_token(token, user, self.config)
            if why is not None:
                self.counts["token"] += 1
                return "28P01", f'password authentication failed for user "{user}": {why}'
            self.counts["accepted"] += 1
            self.open += 1
        return None

    def _relay(self, client: ssl.SSLSocket, startup: bytes) -> None:
        backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        backend.connect(self.config.backend_socket)
        backend.sendall(struct.pack("!II", len(startup) + 8, _PROTOCOL_3) + startup)
        done = threading.Event()
        aged = threading.Event()

        def answers() -> None:  # backend to client
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := backend.recv(65536):
                    client.sendall(data)
            done.set()

        def age() -> None:
            if done.wait(self.config.max_age_s):
                return
            aged.set()
            with self._lock:
                self.counts["aged"] += 1
            with contextlib.suppress(OSError, ssl.SSLError):
                client.sendall(
                    _error("57P01", "terminating connection: it reached its maximum age")
                )
            for sock in (backend, client):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=answers, daemon=True).start()
        threading.Thread(target=age, daemon=True).start()
        try:
            with contextlib.suppress(OSError, ssl.SSLError):
                while data := client.recv(65536):
                    backend.sendall(data)
        finally:
            done.set()
            with contextlib.suppress(OSError):
                backend.shutdown(socket.SHUT_RDWR)
            backend.close()

    def _cancel(self, packet: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as backend:
            backend.connect(self.config.backend_socket)
            backend.sendall(packet)


def start(
    server: Any,
    *,
    rate: float = 100.0,
    burst: int = 1000,
    max_connections: int = 10_000,
    max_age_s: float = 3600.0,
    secret_key: str | None = None,
    token_max_age_s: float | None = None,
    startup_timeout_s: float = 10.0,
) -> tuple[subprocess.Popen[str], int]:
    """Start the proxy in front of an :class:`~dsqltrace.pg.EmbeddedPostgres`; returns the
    process (stop it with SIGTERM: it prints its counts and CPU) and its port."""
    tls = server.folder / "tls"
    env = dict(os.environ)
    env.pop("DSQLTRACE_PROXY_SECRET_KEY", None)
    if secret_key:
        env["DSQLTRACE_PROXY_SECRET_KEY"] = secret_key
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsqltrace.dsqlproxy",
            "--backend-socket",
            str(server.data / f".s.PGSQL.{server.port}"),
            "--cert",
            str(tls / "server.crt"),
            "--key",
            str(tls / "server.key"),
            "--rate",
            str(rate),
            "--burst",
            str(burst),
            "--max-connections",
            str(max_connections),
            "--max-age",
            str(max_age_s),
            *(["--token-max-age", str(token_max_age_s)] if token_max_age_s else []),
            "--startup-timeout",
            str(startup_timeout_s),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"the DSQL proxy did not start: {line.strip()}")
    return process, int(line.rsplit(":", 1)[1])


def front(server: Any, db_env: dict[str, str], **limits: Any) -> subprocess.Popen[str]:
    """Put the proxy in front of ``server``: ``db_env`` (the handlers' DSQL settings) then
    reaches it instead.  Tokens signed with the environment's key are checked in full."""
    secret = db_env.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    process, port = start(server, secret_key=secret, **limits)
    db_env["PGPORT"] = str(port)
    return process


def stop(process: subprocess.Popen[str]) -> str:
    """Stop a proxy from :func:`start`; what it said at exit (its counts and CPU)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out.strip()


def cpu_seconds() -> float:
    """CPU this process used so far (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(args: argparse.Namespace) -> None:
    config = ProxyConfig(
        backend_socket=args.backend_socket,
        cert_file=args.cert,
        key_file=args.key,
        host=args.host,
        region=args.region,
        rate=args.rate,
        burst=args.burst,
        max_connections=args.max_connections,
        max_age_s=args.max_age,
        secret_key=os.environ.get("DSQLTRACE_PROXY_SECRET_KEY") or None,
        token_max_age_s=args.token_max_age,
        startup_timeout_s=args.startup_timeout,
    )
    proxy = Proxy(config)
    listener = socket.create_server(("127.0.0.1", args.port), backlog=1024)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"dsql proxy listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    proxy.serve_forever(listener, stop)
    listener.close()
    proxy.abort_all()
    counts = ", ".join(f"{k} {v}" for k, v in proxy.counts.items())
    print(f"dsql proxy stopped: {counts}; cpu {cpu_seconds():.3f} s", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend-socket", required=True, help="the PostgreSQL Unix socket")
    parser.add_argument("--cert", required=True, help="TLS certificate for --host")
    parser.add_argument("--key", required=True, help="its private key")
    parser.add_argument("--host", default="localhost", help="the endpoint tokens are signed for")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--rate", type=float, default=100.0, help="new connections a second (100)")
    parser.add_argument("--burst", type=int, default=1000, help="the bucket's size (1,000)")
    parser.add_argument("--max-connections", type=int, default=10_000)
    parser.add_argument("--max-age", type=float, default=3600.0, help="seconds (3,600)")
    parser.add_argument(
        "--token-max-age", type=float, default=None, help="refuse older tokens too (tests)"
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=10.0, help="seconds from connect to password"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsqltrace.dsqlproxy", description=__doc__)
    add_arguments(parser)
    _run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
