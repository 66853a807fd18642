"""psycopg 3 spans: one CLIENT span per query, one ``dsql.connect`` span per connection.

Use :class:`TracedConnection` (or :class:`AsyncTracedConnection`) where you
would use ``psycopg.Connection``: its ``connect()`` is wrapped in a
``dsql.connect`` span and its cursors trace every ``execute``.  With a pool,
pass ``connection_class=TracedConnection``.  For a connection made elsewhere,
set ``conn.cursor_factory = TracedCursor``.

Query spans are named ``"{operation} {table}"`` (``"INSERT todos"``) and carry
the stable database semantic conventions.  ``db.query.text`` is the statement
as written with its placeholders; string and number literals are replaced by
``?``, and parameter values are never recorded.

Why not opentelemetry-instrumentation-psycopg: it costs about 30 ms of import
and dependency checks at cold start, names spans by the first keyword only,
opens no span for connect, and emits the old attribute names by default.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from opentelemetry.trace import SpanKind
from opentelemetry.util import types

from tracing import names
from tracing.spans import SpanScope

if TYPE_CHECKING:
    from psycopg.abc import Params

__all__ = [
    "AsyncTracedConnection",
    "AsyncTracedCursor",
    "QueryInfo",
    "TracedConnection",
    "TracedCursor",
    "connect_attributes",
    "describe_query",
]

_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_IDENT = r'((?:"[^"]+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"[^"]+"|[A-Za-z_][\w$]*))?)'
_TABLE_AFTER = {
    "INSERT": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "UPDATE": re.compile(r"\AUPDATE\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "DELETE": re.compile(r"\bFROM\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "SELECT": re.compile(r"\bFROM\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "MERGE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
}
_LITERALS = re.compile(
    r"""
      '(?:[^']|'')*'                       # 'string', with '' escapes
    | \$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$  # $$dollar-quoted$$
    | (?<![\w$.%])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b   # numbers, not $1 or identifiers
    """,
    re.S | re.X,
)
_CACHE_SIZE = 512


class QueryInfo:
    """What a statement's span shows: its name, operation, table and redacted text."""

    __slots__ = ("attributes", "span_name")

    def __init__(self, span_name: str, attributes: dict[str, types.AttributeValue]) -> None:
        self.span_name = span_name
        self.attributes = attributes


_cache: dict[str, QueryInfo] = {}


def describe_query(text: str) -> QueryInfo:
    """Name and attributes of a SQL statement (cached per statement text)."""
    info = _cache.get(text)
    if info is not None:
        return info
    body = text[_LEADING_COMMENTS.match(text).end() :]  # type: ignore[union-attr]
    word = _FIRST_WORD.match(body)
    operation = word.group(0).upper() if word else "QUERY"
    table = None
    finder = _TABLE_AFTER.get(operation)
    if finder is not None:
        found = finder.search(body)
        if found:
            table = re.sub(r'\s+|"', "", found.group(1))
    attributes: dict[str, types.AttributeValue] = {
        names.DB_SYSTEM_NAME: "postgresql",
        names.DB_OPERATION_NAME: operation,
        names.DB_QUERY_TEXT: _LITERALS.sub("?", text.strip()),
        names.DD_OPERATION_NAME: names.DB_QUERY,
        names.DD_SPAN_TYPE: "sql",
    }
    span_name = operation
    if table:
        attributes[names.DB_COLLECTION_NAME] = table
        span_name = f"{operation} {table}"
    attributes[names.DD_RESOURCE_NAME] = span_name
    info = QueryInfo(span_name, attributes)
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[text] = info
    return info


def _query_text(query: Any, cursor: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    if isinstance(query, psycopg.sql.Composable):
        return query.as_string(cursor)
    return str(query)


def _server_attributes(conn: Any) -> dict[str, types.AttributeValue]:
    """``db.namespace``, ``server.address`` and ``server.port`` of a connection (cached on it)."""
    attrs: dict[str, types.AttributeValue] | None = getattr(conn, "_tracing_attrs", None)
    if attrs is None:
        info = conn.info
        attrs = {names.DB_NAMESPACE: info.dbname, names.SERVER_ADDRESS: info.host}
        with contextlib.suppress(TypeError, ValueError):
            attrs[names.SERVER_PORT] = int(info.port)
        with contextlib.suppress(AttributeError):
            conn._tracing_attrs = attrs
    return attrs


def _open_query_span(query: Any, cursor: Any) -> SpanScope:
    text = _query_text(query, cursor)
    conn = cursor.connection
    # Statement and server attributes together, cached per connection and statement.
    per_conn: dict[str, tuple[str, dict[str, types.AttributeValue]]] | None = getattr(
        conn, "_tracing_queries", None
    )
    if per_conn is None:
        per_conn = {}
        with contextlib.suppress(AttributeError):
            conn._tracing_queries = per_conn
    hit = per_conn.get(text)
    if hit is None:
        info = describe_query(text)
        attributes = {**info.attributes, **_server_attributes(conn)}
        if len(per_conn) >= _CACHE_SIZE:
            per_conn.clear()
        hit = per_conn[text] = (info.span_name, attributes)
    return SpanScope(hit[0], SpanKind.CLIENT, hit[1])


def _close_query_span(scope: SpanScope, cursor: Any, exc: BaseException | None) -> None:
    if exc is None:
        if cursor.rowcount >= 0 and cursor.pgresult is not None and cursor.description:
            scope.span.set_attribute(names.DB_RESPONSE_RETURNED_ROWS, cursor.rowcount)
    elif isinstance(exc, psycopg.Error) and exc.sqlstate:
        scope.span.set_attribute(names.DB_RESPONSE_STATUS_CODE, exc.sqlstate)
    scope.close(exc)


class TracedCursor(psycopg.Cursor[Any]):
    """A cursor whose ``execute`` and ``executemany`` are traced."""

    def execute(
        self,
        query: Any,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> TracedCursor:
        scope = _open_query_span(query, self)
        try:
            super().execute(query, params, prepare=prepare, binary=binary)
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)
        return self

    def executemany(
        self, query: Any, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        scope = _open_query_span(query, self)
        try:
            super().executemany(query, params_seq, returning=returning)
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)


class AsyncTracedCursor(psycopg.AsyncCursor[Any]):
    """The async twin of :class:`TracedCursor`."""

    async def execute(
        self,
        query: Any,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> AsyncTracedCursor:
        scope = _open_query_span(query, self)
        try:
            await super().execute(query, params, prepare=prepare, binary=binary)
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)
        return self

    async def executemany(
        self, query: Any, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        scope = _open_query_span(query, self)
        try:
            await super().executemany(query, params_seq, returning=returning)
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)


def connect_attributes(conninfo: str, params: Mapping[str, Any]) -> dict[str, types.AttributeValue]:
    """Span attributes of a connection attempt: host, port, database, user; never the password."""
    try:
        merged = psycopg.conninfo.conninfo_to_dict(conninfo, **params)
    except psycopg.ProgrammingError:
        merged = {}
    attrs: dict[str, types.AttributeValue] = {
        names.DB_SYSTEM_NAME: "postgresql",
        names.DD_OPERATION_NAME: names.DSQL_CONNECT,
        names.DD_RESOURCE_NAME: names.DSQL_CONNECT,
    }
    if merged.get("host"):
        attrs[names.SERVER_ADDRESS] = str(merged["host"])
    port = str(merged.get("port") or "5432")
    if port.isdigit():
        attrs[names.SERVER_PORT] = int(port)
    if merged.get("dbname"):
        attrs[names.DB_NAMESPACE] = str(merged["dbname"])
    if merged.get("user"):
        attrs[names.DSQL_USER] = str(merged["user"])
    return attrs


class TracedConnection(psycopg.Connection[Any]):
    """``psycopg.Connection`` with a ``dsql.connect`` span and traced cursors."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> TracedConnection:
        kwargs.setdefault("cursor_factory", TracedCursor)
        scope = SpanScope(names.DSQL_CONNECT, SpanKind.CLIENT, connect_attributes(conninfo, kwargs))
        try:
            conn = super().connect(conninfo, **kwargs)
        except BaseException as exc:
            if isinstance(exc, psycopg.Error) and exc.sqlstate:
                scope.span.set_attribute(names.DB_RESPONSE_STATUS_CODE, exc.sqlstate)
            scope.close(exc)
            raise
        scope.close()
        return conn


class AsyncTracedConnection(psycopg.AsyncConnection[Any]):
    """The async twin of :class:`TracedConnection`."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> AsyncTracedConnection:
        kwargs.setdefault("cursor_factory", AsyncTracedCursor)
        scope = SpanScope(names.DSQL_CONNECT, SpanKind.CLIENT, connect_attributes(conninfo, kwargs))
        try:
            conn = await super().connect(conninfo, **kwargs)
        except BaseException as exc:
            if isinstance(exc, psycopg.Error) and exc.sqlstate:
                scope.span.set_attribute(names.DB_RESPONSE_STATUS_CODE, exc.sqlstate)
            scope.close(exc)
            raise
        scope.close()
        return conn
