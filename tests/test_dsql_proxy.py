"""DSQL's connection rules reproduced locally (``dsqltrace.dsqlproxy``) and met by the handlers:
the connection rate (53400, retried, then 503), the 60-minute age (a transparent reconnect),
the IAM token checked at connect (the seed's reused token fails here as on DSQL)."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from dsqltrace import dsqlproxy
from dsqltrace.dsqlproxy import ProxyConfig, check_token
from handlers.token import presign
from tests import functions
from tests.functions import call
from tracing import names

SECRET = "test-secret-key-for-signing-only"  # the dsql_env fixture's
CONFIG = ProxyConfig("/nonexistent", "", "", secret_key=SECRET)


def _token(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "hostname": "localhost",
        "region": "us-east-1",
        "action": "DbConnectAdmin",
        "access_key": "AKIDTESTTESTTESTTEST",
        "secret_key": SECRET,
    }
    args.update(overrides)
    return presign(**args)


# --- the token check ------------------------------------------------------------------


def test_a_fresh_token_for_this_endpoint_is_accepted() -> None:
    assert check_token(_token(), "admin", CONFIG) is None
    assert check_token(_token(action="DbConnect"), "reader", CONFIG) is None


@pytest.mark.parametrize(
    ("token", "user", "why"),
    [
        (
            lambda: _token(now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)),
            "admin",
            "expired",
        ),
        (lambda: _token(hostname="other.dsql.us-east-1.on.aws"), "admin", "another endpoint"),
        (lambda: _token(region="eu-west-1"), "admin", "another region"),
        (lambda: _token(), "reader", "does not allow DbConnect"),
        (lambda: _token(action="DbConnect"), "admin", "does not allow DbConnectAdmin"),
        (lambda: _token(secret_key="someone else's"), "admin", "signature does not match"),
        (
            lambda: _token(now=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)),
            "admin",
            "in the future",
        ),
        (lambda: "hunter2", "admin", "not an IAM auth token"),
    ],
)
def test_dsql_refuses_a_bad_token(token: Any, user: str, why: str) -> None:
    assert why in (check_token(token(), user, CONFIG) or "")


def test_tokens_older_than_the_scaled_down_limit_are_refused() -> None:
    config = ProxyConfig("/nonexistent", "", "", token_max_age_s=1.0)
    old = _token(now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5))
    assert "expired" in (check_token(old, "admin", config) or "")


# --- through the proxy ------------------------------------------------------------------


@pytest.fixture
def proxied(dsql_env: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Start a proxy with the limits a test asks for; the handlers' settings then reach it."""
    started: list[Any] = []

    def start(**limits: Any) -> Any:
        process, port = dsqlproxy.start(dsql_env, secret_key=SECRET, **limits)
        started.append(process)
        monkeypatch.setenv("PGPORT", str(port))
        return process

    yield start
    functions.close_all()
    for process in started:
        dsqlproxy.stop(process)


def _counts(said: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+) (\d+)", said.split(";")[0])}


def test_the_rate_limit_is_retried_and_recorded(
    proxied: Any, sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handlers.database import Database

    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")  # not an init: spans, not cold-start phases
    # The third connection waits a second for its token: longer than the first retries, shorter
    # than all of them (at least 1.27 s with the least jitter).
    proxy = proxied(rate=1.0, burst=2)
    databases = [Database.from_env() for _ in range(3)]
    try:
        for database in databases:
            database.connect(time.monotonic() + 10)
    finally:
        for database in databases:
            database.close()
    from tracing.testing import delivery

    delivery().flush()
    attempts = [s for s in sink.spans if s.name == names.DSQL_CONNECT]
    refused = [s for s in attempts if s.attributes.get(names.DB_RESPONSE_STATUS_CODE)]
    assert refused and {s.attributes[names.DB_RESPONSE_STATUS_CODE] for s in refused} == {"53400"}
    succeeded = [s for s in attempts if s.attributes.get(names.DSQL_CONNECT_RETRY_COUNT)]
    assert succeeded[-1].attributes[names.DSQL_CONNECT_RETRY_COUNT] == len(refused)
    counts = _counts(dsqlproxy.stop(proxy))
    assert counts["accepted"] == 3 and counts["rate"] == len(refused)


def test_out_of_retries_the_api_answers_503_with_retry_after(proxied: Any, sink: Any) -> None:
    proxied(rate=0.01, burst=1)  # one connection (init's), then none for 100 s
    select = functions.load("handlers.select")
    select.database.close()
    response = call(select, "GET", "/todos")
    assert response["statusCode"] == 503
    assert response["headers"]["retry-after"]
    assert response["json"]["error"]["code"]
    refused = [
        s
        for s in sink.spans
        if s.name == names.DSQL_CONNECT
        and s.attributes.get(names.DB_RESPONSE_STATUS_CODE) == "53400"
    ]
    assert len(refused) >= 2  # retried with backoff before giving up


def test_a_connection_closed_at_its_maximum_age_is_replaced(
    proxied: Any, sink: Any, dsql_env: Any
) -> None:
    from tests.support import eventually

    proxy = proxied(max_age_s=1.0)
    select = functions.load("handlers.select")
    assert call(select, "GET", "/todos")["statusCode"] == 200
    pid = select.database.connection().info.backend_pid
    # DSQL closes the connection (60 minutes, scaled down): its backend goes away.
    eventually(
        lambda: (
            dsql_env.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}").strip() == "0"
        )
    )
    sink.clear()
    assert call(select, "GET", "/todos")["statusCode"] == 200
    (query,) = [s for s in sink.spans if s.name == "Query Todos"]
    assert query.attributes.get(names.DSQL_RECONNECT) is True
    assert _counts(dsqlproxy.stop(proxy))["aged"] >= 1


def test_the_seeds_reused_token_fails_and_the_handlers_never_send_one(
    proxied: Any, dsql_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from handlers.database import Database
    from handlers.token import TokenGenerator

    # Tokens are dated to the second, so a fresh one can look up to 1 s old: 2 s of life.
    proxy = proxied(token_max_age_s=2.0)
    options = {
        "host": "localhost",
        "port": int(os.environ["PGPORT"]),
        "user": "admin",
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(dsql_env.ca_file),
        "autocommit": True,
    }
    psycopg.connect(password=_token(), **options).close()  # the seed's, at its cold start
    # The same token 3 s on (the seed kept it for the pool's life): dated 3 s ago.
    kept = _token(now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=3))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(password=kept, **options)
    made: list[str] = []
    generate = TokenGenerator.generate
    monkeypatch.setattr(
        TokenGenerator, "generate", lambda self: made.append("token") or generate(self)
    )
    database = Database.from_env()
    database.connect()
    database.connect()  # a fresh token for each new connection
    database.close()
    assert len(made) == 2
    counts = _counts(dsqlproxy.stop(proxy))
    assert counts["token"] == 1 and counts["accepted"] == 3


def test_garbage_is_dropped_and_the_proxy_serves_on(proxied: Any, dsql_env: Any) -> None:
    import os
    import socket
    import struct

    from handlers.database import Database

    proxy = proxied()
    port = int(os.environ["PGPORT"])
    for junk in (b"\x00\x00\x00\x04\x00\x00\x00\x00", struct.pack("!II", 2**31, 80877103), b"GET"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(200)
            # Closed, TLS offered (then closed), or a FATAL error: never a crash or a hang.
            assert answer[:1] in (b"", b"S", b"E"), answer
    database = Database.from_env()
    database.connect()  # a real client is still served
    database.close()
    assert _counts(dsqlproxy.stop(proxy))["accepted"] == 1


def test_a_client_that_says_nothing_is_dropped_after_the_startup_bound(
    proxied: Any, dsql_env: Any
) -> None:
    import os
    import socket

    from handlers.database import Database

    proxy = proxied(startup_timeout_s=0.3)
    port = int(os.environ["PGPORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
        assert silent.recv(100) == b""  # closed by the proxy, not by our own timeout
    database = Database.from_env()
    database.connect()  # and the proxy serves on
    database.close()
    assert _counts(dsqlproxy.stop(proxy))["accepted"] == 1
