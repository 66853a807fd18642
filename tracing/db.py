"""psycopg 3 spans: one CLIENT span per statement, one span per connection.

Use :class:`TracedConnection` (or :class:`AsyncTracedConnection`) where you
would use ``psycopg.Connection``: its ``connect()`` is wrapped in a
``postgresql.connect`` span and its cursors trace every ``execute``.  For a
connection authenticated with an Aurora DSQL IAM token use
:class:`DsqlConnection` (span ``dsql.connect``; the naming rule is in
:mod:`tracing.names`).  A ``cursor_factory`` of your own (``ClientCursor``...)
is kept: the traced cursor is made from it.  For a connection made elsewhere,
set ``conn.cursor_factory = traced_cursor_factory(conn.cursor_factory)``.

Query spans are named ``"{operation} {table}"`` (``"INSERT todos"``) and carry
the stable database semantic conventions.  ``db.query.text`` is the statement
with its placeholders, read by a tokenizer that follows PostgreSQL's lexical
rules: every literal (standard, escape, bit and dollar-quoted strings,
numbers) becomes ``?`` and comments are dropped; parameter values are never
recorded.  A failed statement records its SQLSTATE and constraint name, never
the server's message or ``DETAIL`` (they quote row values).

Why not opentelemetry-instrumentation-psycopg: it costs about 30 ms of import
and dependency checks at cold start, names spans by the first keyword only,
opens no span for connect, and emits the old attribute names by default.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import psycopg
from opentelemetry.trace import SpanKind
from opentelemetry.util import types

from tracing import names
from tracing.runtime import logger
from tracing.spans import SpanScope

if TYPE_CHECKING:
    from psycopg.abc import Params

__all__ = [
    "AsyncDsqlConnection",
    "AsyncTracedConnection",
    "AsyncTracedCursor",
    "DsqlConnection",
    "QueryInfo",
    "TracedConnection",
    "TracedCursor",
    "connect_attributes",
    "describe_query",
    "redact_sql",
    "refusal_sqlstate",
    "reset_caches",
    "traced_cursor_factory",
]

_IDENT = r'((?:"[^"]+"|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:"[^"]+"|[A-Za-z_][\w$]*))?)'
_TABLE_AFTER = {
    "INSERT": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "UPDATE": re.compile(r"\AUPDATE\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "DELETE": re.compile(r"\bFROM\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "SELECT": re.compile(r"\bFROM\s+(?:ONLY\s+)?" + _IDENT, re.I),
    "MERGE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
}
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_CACHE_SIZE = 512

# PostgreSQL's lexer (src/backend/parser/scan.l), for what redaction needs.  Letters
# include every non-ASCII character, as PostgreSQL's do.  The classes are written as
# "all but these ASCII characters": the same sets as [A-Za-z_\u0080-\U0010ffff] and
# its kin, which take ``re`` about 45 ms to compile at every cold start.
_LETTER = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ and non-ASCII
_LETTER_OR_DIGIT = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # and 0-9
_WORD_CHAR = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # and 0-9 $
_TOKEN = re.compile(
    rf"""
      (?P<space>[ \t\n\r\f\v]+)
    | (?P<line>--[^\n\r]*)
    | (?P<block>/\*)
    | (?P<escape>[eE]')
    | (?P<plain>(?:[bBxXnN]|[uU]&)?')
    | (?P<quoted>(?:[uU]&)?")
    | (?P<dollar>\$(?:{_LETTER}{_LETTER_OR_DIGIT}*)?\$)
    | (?P<param>\$[0-9]+)
    | (?P<number>0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?)
    | (?P<word>{_LETTER}{_WORD_CHAR}*)
    | (?P<other>.)
    """,
    re.X | re.S,
)


def _end_of_doubled(text: str, i: int, quote: str) -> int:
    """End of a string or quoted identifier opened before ``i`` by ``quote``, in which a
    doubled quote stands for one."""
    n = len(text)
    while True:
        j = text.find(quote, i)
        if j < 0:
            return n
        if j + 1 < n and text[j + 1] == quote:
            i = j + 2
            continue
        return j + 1


def _end_of_escape(text: str, i: int) -> int:
    """End of an ``E'...'`` string: backslash escapes and '' inside."""
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == "'":
            if i + 1 < n and text[i + 1] == "'":
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _end_of_block(text: str, i: int) -> int:
    """End of a ``/* */`` comment, which nests in PostgreSQL."""
    depth = 1
    n = len(text)
    while i < n and depth:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
        else:
            i += 1
    return i


def redact_sql(text: str) -> str:
    """``text`` with every literal replaced by ``?`` and every comment dropped.

    Placeholders (``%s``, ``%(name)s``, ``$1``), identifiers, quoted
    identifiers, keywords and operators are kept as written.  Anything left
    unterminated at the end (a string, a comment) counts as a literal.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    match = _TOKEN.match
    while i < n:
        m = match(text, i)
        assert m is not None  # "other" matches any character
        kind = m.lastgroup
        end = m.end()
        if kind == "plain":
            end = _end_of_doubled(text, end, "'")
            out.append("?")
        elif kind == "escape":
            end = _end_of_escape(text, end)
            out.append("?")
        elif kind == "dollar":
            close = text.find(m.group(), end)
            end = n if close < 0 else close + len(m.group())
            out.append("?")
        elif kind == "number":
            out.append("?")
        elif kind == "quoted":
            end = _end_of_doubled(text, end, '"')
            out.append(text[i:end])
        elif kind == "line":
            out.append(" ")
        elif kind == "block":
            end = _end_of_block(text, end)
            out.append(" ")
        else:
            out.append(m.group())
        i = end
    return re.sub(r"[ \t\n\r\f\v]{2,}", " ", "".join(out)).strip()


class QueryInfo:
    """What a statement's span shows: its name, operation, table and redacted text."""

    __slots__ = ("attributes", "span_name")

    def __init__(self, span_name: str, attributes: dict[str, types.AttributeValue]) -> None:
        self.span_name = span_name
        self.attributes = attributes


_cache: dict[str, QueryInfo] = {}


def reset_caches() -> None:
    """Forget the described statements (``tracing.testing.reset_tracing``)."""
    _cache.clear()


def describe_query(text: str) -> QueryInfo:
    """Name and attributes of a SQL statement (cached per statement text)."""
    info = _cache.get(text)
    if info is not None:
        return info
    redacted = redact_sql(text)
    word = _FIRST_WORD.match(redacted)
    operation = word.group(0).upper() if word else "QUERY"
    table = None
    finder = _TABLE_AFTER.get(operation)
    if finder is not None:
        found = finder.search(redacted)
        if found:
            table = re.sub(r'\s+|"', "", found.group(1))
    attributes: dict[str, types.AttributeValue] = {
        names.DB_SYSTEM_NAME: "postgresql",
        names.DB_OPERATION_NAME: operation,
        names.DB_QUERY_TEXT: redacted,
        names.DD_OPERATION_NAME: names.OPERATION_DB_QUERY,
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


def _close_query_span(
    scope: SpanScope,
    cursor: Any,
    exc: BaseException | None,
    query: Any = None,
    params: Any = None,
) -> None:
    span = scope.span
    if exc is None and cursor.rowcount >= 0 and cursor.pgresult is not None and cursor.description:
        span.set_attribute(names.DB_RESPONSE_RETURNED_ROWS, cursor.rowcount)
    # Loaded by setup_tracing only when DSQLTRACE_EXPLAIN is on: not at every cold start.
    explain = sys.modules.get("tracing.explain") if exc is None else None
    if explain is not None and explain.policy() is None:
        explain = None
    attributes = (getattr(span, "attributes", None) or {}) if explain is not None else {}
    if explain is not None:
        dpu = explain.estimate(str(attributes.get(names.DB_QUERY_TEXT, "")))
        if dpu is not None:
            span.set_attribute(names.DPU_ESTIMATE, dpu)
    scope.close(exc)  # an error: SQLSTATE and constraint, never the server's message
    if explain is not None and query is not None:  # after the end: the duration is known
        try:
            explain.consider(cursor, _query_text(query, cursor), params, span, attributes)
        except Exception as err:  # explaining is a nicety: never the statement's failure
            logger.warning("tracing: could not queue an explain: %s", type(err).__name__)


class _TracedCursorMixin:
    """Traces ``execute`` and ``executemany`` of the cursor class it is mixed into."""

    def execute(self, query: Any, params: Params | None = None, **kwargs: Any) -> Any:
        scope = _open_query_span(query, self)
        try:
            super().execute(query, params, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None, query, params)
        return self

    def executemany(self, query: Any, params_seq: Iterable[Params], **kwargs: Any) -> None:
        scope = _open_query_span(query, self)
        try:
            super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)


class _AsyncTracedCursorMixin:
    """The async twin of :class:`_TracedCursorMixin`."""

    async def execute(self, query: Any, params: Params | None = None, **kwargs: Any) -> Any:
        scope = _open_query_span(query, self)
        try:
            await super().execute(query, params, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)
        return self

    async def executemany(self, query: Any, params_seq: Iterable[Params], **kwargs: Any) -> None:
        scope = _open_query_span(query, self)
        try:
            await super().executemany(query, params_seq, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            _close_query_span(scope, self, exc)
            raise
        _close_query_span(scope, self, None)


class TracedCursor(_TracedCursorMixin, psycopg.Cursor[Any]):
    """A cursor whose ``execute`` and ``executemany`` are traced."""


class AsyncTracedCursor(_AsyncTracedCursorMixin, psycopg.AsyncCursor[Any]):
    """The async twin of :class:`TracedCursor`."""


_factories: dict[type[Any], type[Any]] = {
    psycopg.Cursor: TracedCursor,
    psycopg.AsyncCursor: AsyncTracedCursor,
}


def traced_cursor_factory(base: type[Any]) -> type[Any]:
    """A traced cursor class made from ``base`` (``psycopg.ClientCursor``, your own...)."""
    if issubclass(base, _TracedCursorMixin | _AsyncTracedCursorMixin):
        return base
    made = _factories.get(base)
    if made is None:
        mixin = (
            _AsyncTracedCursorMixin
            if issubclass(base, psycopg.AsyncCursor)
            else (_TracedCursorMixin)
        )
        made = _factories[base] = type(f"Traced{base.__name__}", (mixin, base), {})
    return made


def connect_attributes(
    conninfo: str, params: Mapping[str, Any], *, operation: str = names.DB_CONNECT
) -> dict[str, types.AttributeValue]:
    """Span attributes of a connection attempt: host, port, database, user; never the password."""
    try:
        merged = psycopg.conninfo.conninfo_to_dict(conninfo, **params)
    except psycopg.ProgrammingError:
        merged = {}
    attrs: dict[str, types.AttributeValue] = {
        names.DB_SYSTEM_NAME: "postgresql",
        names.DD_OPERATION_NAME: operation,
        names.DD_RESOURCE_NAME: operation,
    }
    if merged.get("host"):
        attrs[names.SERVER_ADDRESS] = str(merged["host"])
    port = str(merged.get("port") or "5432")
    if port.isascii() and port.isdigit():
        attrs[names.SERVER_PORT] = int(port)
    if merged.get("dbname"):
        attrs[names.DB_NAMESPACE] = str(merged["dbname"])
    if merged.get("user"):
        attrs[names.DB_USER] = str(merged["user"])
    return attrs


#: How a refused connection says why, when libpq gives its SQLSTATE only in the message
#: (psycopg has no ``sqlstate`` for a failed connect): PostgreSQL's and Aurora DSQL's.
_REFUSALS = (
    ("rate exceeded", "53400"),  # DSQL: more than 100 new connections a second
    ("too many connections", "53300"),
    ("too many clients", "53300"),
)


def refusal_sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a connection refused for a limit (53300, 53400), or None."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in ("53300", "53400"):
        return str(sqlstate)
    if not isinstance(exc, psycopg.OperationalError):
        return None
    text = str(exc).lower()
    return next((code for marker, code in _REFUSALS if marker in text), None)


def _connect_scope(
    span_name: str, conninfo: str, kwargs: dict[str, Any], base: type[Any]
) -> SpanScope:
    kwargs["cursor_factory"] = traced_cursor_factory(kwargs.get("cursor_factory") or base)
    attributes = connect_attributes(conninfo, kwargs, operation=span_name)
    return SpanScope(span_name, SpanKind.CLIENT, attributes)


class TracedConnection(psycopg.Connection[Any]):
    """``psycopg.Connection`` with a connect span and traced cursors."""

    #: The name of the connect span (see the naming rule in :mod:`tracing.names`).
    connect_span_name: ClassVar[str] = names.DB_CONNECT

    @classmethod
    def connect(  # type: ignore[override]  # one keyword more than psycopg's: retry_count
        cls, conninfo: str = "", *, retry_count: int = 0, **kwargs: Any
    ) -> TracedConnection:
        """Connect as ``psycopg.Connection.connect`` does, in a connect span;
        ``retry_count`` (how many attempts the server refused before this one) is
        recorded on it as ``dsql.connect.retry_count``."""
        scope = _connect_scope(cls.connect_span_name, conninfo, kwargs, psycopg.Cursor)
        if retry_count:
            scope.span.set_attribute(names.DSQL_CONNECT_RETRY_COUNT, retry_count)
        try:
            conn = super().connect(conninfo, **kwargs)
        except BaseException as exc:
            refused = refusal_sqlstate(exc)
            if refused is not None:
                scope.span.set_attribute(names.DB_RESPONSE_STATUS_CODE, refused)
            scope.close(exc)
            raise
        scope.close()
        # What the connection was made as, whatever class another instrumentation's
        # wrapper of psycopg's connect returned (explains are named after it).
        with contextlib.suppress(AttributeError):
            conn._tracing_connect_span = cls.connect_span_name  # type: ignore[attr-defined]
        return conn


class DsqlConnection(TracedConnection):
    """A :class:`TracedConnection` authenticated with an Aurora DSQL IAM token."""

    connect_span_name: ClassVar[str] = names.DSQL_CONNECT


class AsyncTracedConnection(psycopg.AsyncConnection[Any]):
    """The async twin of :class:`TracedConnection`."""

    connect_span_name: ClassVar[str] = names.DB_CONNECT

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> AsyncTracedConnection:
        scope = _connect_scope(cls.connect_span_name, conninfo, kwargs, psycopg.AsyncCursor)
        try:
            conn = await super().connect(conninfo, **kwargs)
        except BaseException as exc:
            scope.close(exc)
            raise
        scope.close()
        return conn


class AsyncDsqlConnection(AsyncTracedConnection):
    """The async twin of :class:`DsqlConnection`."""

    connect_span_name: ClassVar[str] = names.DSQL_CONNECT
