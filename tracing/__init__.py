"""dsql-lambda-tracing: see where a Lambda request's time goes, cold start included.

Usage
-----
In the handler module, before anything else that should be traced::

    from tracing import setup_tracing, traced, traced_handler
    from tracing.db import TracedConnection

    setup_tracing()                       # OTLP/HTTP to localhost:4318 by default

    with traced("dsql.connect.pool"):     # init work: replayed under aws.lambda.init
        conn = TracedConnection.connect(dsn)

    @traced("Save Todo")
    def save(todo): ...

    @traced_handler(routes=["/todos", "/todos/{id}"])
    def handler(event, context):
        ...

Every invocation gets one SERVER span (``POST /todos``), the first one also
the back-dated ``aws.lambda.init`` span with the phases init went through, and
all spans are delivered before the handler returns, within a bounded flush
(``DSQLTRACE_FLUSH_TIMEOUT_MS``).  Settings come from arguments, then the
``OTEL_*``/``DD_*``/``DSQLTRACE_*`` variables (see :mod:`tracing.config`).

Modules: :mod:`tracing.names` (span names and attribute keys),
:mod:`tracing.config`, :mod:`tracing.setup`, :mod:`tracing.handler`,
:mod:`tracing.spans`, :mod:`tracing.coldstart`, :mod:`tracing.propagation`,
:mod:`tracing.export` and :mod:`tracing.otlp` (delivery), :mod:`tracing.datadog`,
:mod:`tracing.db` (psycopg, imported only when you import it),
:mod:`tracing.logs`, :mod:`tracing.testing`.
"""

from tracing.config import TracingConfig
from tracing.handler import traced_handler
from tracing.logs import JsonFormatter
from tracing.setup import setup_tracing, shutdown_tracing
from tracing.spans import current_span, traced

__all__ = [
    "JsonFormatter",
    "TracingConfig",
    "current_span",
    "setup_tracing",
    "shutdown_tracing",
    "traced",
    "traced_handler",
]
