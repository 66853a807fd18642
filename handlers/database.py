"""One connection per execution environment: opened during init, checked, renewed, retried.

Lambda runs one request at a time per environment, so one connection is
enough.  It is opened during init (a cold-start phase), reopened with a fresh
token when it is older than ``DB_MAX_LIFETIME`` less a random 0-5 % (Aurora
DSQL closes connections at 60 minutes; the jitter keeps environments born in
one burst from renewing in one burst, as psycopg_pool does) or found dead
after a freeze, and every transaction is retried on optimistic-concurrency
conflicts (SQLSTATE 40001) with exponential backoff and jitter, within the
invocation's remaining time.  A connection DSQL refuses for its limits
(53400: more than 100 new connections a second, as a burst of cold starts can
make; 53300: 10,000 connections) is tried again the same way; when it still
fails the API answers 503 with ``Retry-After``.

With SnapStart the connection is closed before the snapshot and reopened, with
a fresh token, by an after-restore hook (:meth:`Database.after_restore`): the
restore's trace shows the new token and connection, and the first request
finds a live one.

Environment variables
---------------------
- ``CLUSTER_ENDPOINT``: the Aurora DSQL endpoint; with ``AWS_REGION``.
- ``DB_USER``: ``admin`` (default) or a custom role (``dsql:DbConnect``).
- ``DB_NAME``: the database (default ``postgres``, DSQL's only one).
- ``DATABASE_URL``: a plain PostgreSQL URL instead (local development, tests).
- ``DB_CONNECT_TIMEOUT``: seconds to wait for a connection (default 3, at least 2).
- ``DB_MAX_LIFETIME``: seconds before a connection is replaced (default 3300).
- ``DB_SSLROOTCERT``: CA bundle for ``sslmode=verify-full`` (default: the system one).
- libpq's own ``PG*`` variables apply too (``PGPORT``, ``PGSSLNEGOTIATION``...).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from handlers.token import TokenGenerator
from tracing import current_span, names, snapstart
from tracing.db import DsqlConnection, TracedConnection, refusal_sqlstate
from tracing.spans import error_message

__all__ = [
    "CONNECT_RETRY_SQLSTATES",
    "RESTORE_CONNECT_S",
    "RETRYABLE_SQLSTATES",
    "ConflictRetriesExhausted",
    "Database",
    "DatabaseUnavailable",
    "Settings",
]


logger = logging.getLogger("handlers")

T = TypeVar("T")

#: SQLSTATEs after which the whole transaction is retried (DSQL: OC000, OC001).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
#: SQLSTATEs of a refused connection worth another attempt: DSQL's connection rate
#: (100 per second, 53400) and count (10,000, 53300) limits.
CONNECT_RETRY_SQLSTATES = frozenset({"53300", "53400"})
#: The most the after-restore connect may take (Lambda allows the hooks 10 s in all).
RESTORE_CONNECT_S = 5.0
_CA_BUNDLES = ("/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/certs/ca-certificates.crt")


class DatabaseUnavailable(Exception):
    """The database could not be reached in time (answered 503 with ``Retry-After``)."""


class ConflictRetriesExhausted(Exception):
    """Optimistic-concurrency conflicts outlasted the retry budget (answered 503)."""


@dataclass(frozen=True)
class Settings:
    """Connection settings, read from the environment once."""

    database_url: str | None
    endpoint: str | None
    region: str
    user: str
    dbname: str
    connect_timeout_s: int
    max_lifetime_s: float
    sslrootcert: str | None
    retries: int = 5
    backoff_base_s: float = 0.002
    backoff_cap_s: float = 0.1
    connect_retries: int = 6
    connect_backoff_base_s: float = 0.025
    connect_backoff_cap_s: float = 1.0

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        url = env.get("DATABASE_URL") or None
        endpoint = env.get("CLUSTER_ENDPOINT") or None
        if url is None and endpoint is None:
            raise RuntimeError("set CLUSTER_ENDPOINT (Aurora DSQL) or DATABASE_URL (PostgreSQL)")
        return cls(
            database_url=url,
            endpoint=endpoint,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            user=env.get("DB_USER") or "admin",
            dbname=env.get("DB_NAME") or "postgres",
            connect_timeout_s=max(2, _int_env("DB_CONNECT_TIMEOUT", 3)),
            max_lifetime_s=float(_int_env("DB_MAX_LIFETIME", 3300)),
            sslrootcert=env.get("DB_SSLROOTCERT") or None,
        )


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        logger.warning("invalid %s=%r; using %d", name, raw, default)
        return default


def _system_ca_bundle() -> str:
    for path in _CA_BUNDLES:
        if os.path.exists(path):
            return path
    return "system"


class Database:
    """The environment's connection, and transactions with OCC retries."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: TracedConnection | None = None
        self._opened_at = 0.0
        self._lifetime_s = settings.max_lifetime_s
        self._tokens = (
            TokenGenerator(settings.endpoint, settings.region, settings.user)
            if settings.endpoint and not settings.database_url
            else None
        )

    @classmethod
    def from_env(cls) -> Database:
        return cls(Settings.from_env())

    @classmethod
    def for_lambda(cls) -> Database:
        """The database as a function's init opens it: settings from the environment,
        connected now (a cold-start phase), and with SnapStart closed before the
        snapshot and reopened after each restore (:meth:`before_snapshot`,
        :meth:`after_restore`)."""
        database = cls.from_env()
        database.warm_up()
        snapstart.on_snapshot(database.before_snapshot)
        snapstart.on_restore(database.after_restore)
        return database

    def _connect_args(self) -> tuple[str, dict[str, Any]]:
        s = self.settings
        common: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": s.connect_timeout_s,
            "application_name": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "todo-api"),
        }
        if s.database_url is not None:
            return s.database_url, common
        assert s.endpoint is not None and self._tokens is not None
        args = {
            **common,
            "host": s.endpoint,
            "dbname": s.dbname,
            "user": s.user,
            "sslmode": "verify-full",
            "sslrootcert": s.sslrootcert or os.environ.get("PGSSLROOTCERT") or _system_ca_bundle(),
            "password": self._tokens.generate(),
        }
        if psycopg.pq.version() >= 170000 and "PGSSLNEGOTIATION" not in os.environ:
            args["sslnegotiation"] = "direct"  # TLS at once: one round trip fewer
        return "", args

    def connect(self, deadline: float | None = None) -> TracedConnection:
        """Open a new connection (a connect span per attempt); DatabaseUnavailable if it fails.

        A connection refused for DSQL's limits (:data:`CONNECT_RETRY_SQLSTATES`) is
        tried again with exponential backoff and full jitter, at most
        ``connect_retries`` times and never past ``deadline`` (a ``time.monotonic()``
        value); the attempt that succeeds records how many were refused before it.
        """
        self.close()
        s = self.settings
        refused = 0
        while True:
            conninfo, args = self._connect_args()
            try:
                connection_class = TracedConnection if self._tokens is None else DsqlConnection
                self._conn = connection_class.connect(conninfo, retry_count=refused, **args)
                break
            except psycopg.OperationalError as exc:
                sqlstate = refusal_sqlstate(exc)
                if sqlstate not in CONNECT_RETRY_SQLSTATES:
                    raise DatabaseUnavailable(_describe_failure(exc)) from None
                refused += 1
                delay = _backoff(
                    refused, s.connect_backoff_base_s, s.connect_backoff_cap_s, (0.5, 1.0)
                )
                if _out_of_retries(refused, s.connect_retries, delay, deadline):
                    raise DatabaseUnavailable(
                        f"connection refused (SQLSTATE {sqlstate}), still after {refused} attempts"
                    ) from None
                time.sleep(delay)
        self._opened_at = time.monotonic()
        self._lifetime_s = self.settings.max_lifetime_s * random.uniform(0.95, 1.0)
        return self._conn

    def warm_up(self, deadline: float | None = None) -> None:
        """Connect during init; a failure is logged, and the first request tries again."""
        try:
            self.connect(deadline)
        except DatabaseUnavailable as exc:
            logger.warning("database not reachable during init: %s", exc)

    def before_snapshot(self) -> None:
        """SnapStart, before the snapshot: close the connection and forget the signer's
        credentials, so that no restored copy holds a socket, a token or a key of init's."""
        self.close()
        if self._tokens is not None:
            self._tokens.forget()

    def after_restore(self) -> None:
        """SnapStart, after each restore: connect with a fresh token, within
        :data:`RESTORE_CONNECT_S`.  A failure is logged, never raised (it would fail the
        restore): the first request connects then, with its own retries and deadline."""
        self.close()  # whatever init left (nothing, after before_snapshot) is dead now
        self.warm_up(time.monotonic() + RESTORE_CONNECT_S)

    def connection(self, deadline: float | None = None) -> TracedConnection:
        """The open connection, reopened if closed, broken or past its lifetime."""
        conn = self._conn
        if (
            conn is None
            or conn.closed
            or conn.broken
            or time.monotonic() - self._opened_at > self._lifetime_s
        ):
            return self.connect(deadline)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def run(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        *,
        idempotent: bool,
        deadline: float | None = None,
    ) -> T:
        """Run ``work`` in one transaction; retry it on conflicts and once on a lost connection.

        ``deadline`` is a ``time.monotonic()`` value the retries must not pass.
        A connection lost while the statements ran is always safe to retry
        (nothing was committed); one lost during COMMIT only when ``idempotent``.
        The retry count goes on the current span as ``dsql.occ.retry_count``.
        """
        s = self.settings
        conflicts = 0
        reconnected = False
        while True:
            conn = self.connection(deadline)
            in_commit = False
            try:
                with conn.transaction():
                    result = work(conn)
                    in_commit = True
                if conflicts:
                    current_span().set_attribute(names.DSQL_OCC_RETRY_COUNT, conflicts)
                return result
            except psycopg.Error as exc:
                if exc.sqlstate in RETRYABLE_SQLSTATES:
                    conflicts += 1
                    current_span().set_attribute(names.DSQL_OCC_RETRY_COUNT, conflicts)
                    delay = _backoff(conflicts, s.backoff_base_s, s.backoff_cap_s, (0.75, 1.25))
                    if _out_of_retries(conflicts, s.retries, delay, deadline):
                        raise ConflictRetriesExhausted(
                            f"gave up after {conflicts} conflicting attempts"
                        ) from None
                    time.sleep(delay)
                    continue
                if conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError):
                    self.close()
                    if reconnected or (in_commit and not idempotent):
                        raise DatabaseUnavailable(_describe_failure(exc)) from None
                    reconnected = True
                    current_span().set_attribute(names.DSQL_RECONNECT, True)
                    continue
                raise


def _backoff(attempt: int, base_s: float, cap_s: float, jitter: tuple[float, float]) -> float:
    """Exponential backoff for ``attempt`` (1, 2, ...), capped, times a random jitter."""
    low, high = jitter
    return min(cap_s, base_s * 2.0**attempt) * random.uniform(low, high)


def _out_of_retries(attempt: int, most: int, delay: float, deadline: float | None) -> bool:
    """Whether to give up: past ``most`` attempts, or the delay would cross ``deadline``."""
    return attempt > most or (deadline is not None and time.monotonic() + delay > deadline)


def _describe_failure(exc: psycopg.Error) -> str:
    """A short, secret-free description of a connection failure: a server error by its
    SQLSTATE (its message may quote values), a client-side one by its first line."""
    if exc.sqlstate:
        return error_message(exc)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first[:200]}"
