"""dsql-lambda-tracing: see where a Lambda request's time goes, cold start included.

Usage
-----
In the handler module, before anything else that should be traced::

    from tracing import TracingConfig, setup_tracing, traced, traced_handler
    from tracing.db import DsqlConnection

    setup_tracing()                       # settings from the environment (OTLP to :4318)
    # or: setup_tracing(TracingConfig(service_name="todo-api", flush_timeout_ms=100))

    conn = DsqlConnection.connect(**params)   # init: replayed under aws.lambda.init

    @traced("Save Todo")
    def save(todo): ...

    @traced_handler(routes=["/todos", "/todos/{id}"])
    def handler(event, context):
        ...

Every invocation gets one span named for its trigger (``POST /todos`` for
HTTP, ``orders process`` for SQS, SNS and EventBridge; :mod:`tracing.triggers`);
the first one also the back-dated ``aws.lambda.init`` span with the phases
init went through.  Instrumentations turned on beside it (botocore,
requests, psycopg...) use the same provider and delivery; your own span
processors go in ``setup_tracing(processors=[...])``.
Spans are delivered when the invocation ends, within a bounded flush
(``DSQLTRACE_FLUSH_TIMEOUT_MS``), whatever the collector does.  Settings come
from :class:`TracingConfig`: argument, then the ``OTEL_*``/``DD_*``/``DSQLTRACE_*``
variables (see :mod:`tracing.config`), then defaults.

Modules, in the order a request meets them: :mod:`tracing.handler` (the
invocation span), :mod:`tracing.triggers` (which event),
:mod:`tracing.propagation` (incoming context),
:mod:`tracing.coldstart`, :mod:`tracing.spans` (``traced``), :mod:`tracing.db`
(psycopg; imported only when you import it), :mod:`tracing.export` and
:mod:`tracing.otlp` (delivery), or :mod:`tracing.xray` (with
:mod:`tracing.sigv4`) and :mod:`tracing.stdout` (with the log forwarder,
:mod:`tracing.forwarder`), :mod:`tracing.datadog` and
:mod:`tracing.datadog_propagator`; :mod:`tracing.snapstart` (SnapStart's runtime
hooks: init delivered once, ids reseeded and the restore traced); and around them
:mod:`tracing.config`, :mod:`tracing.setup`, :mod:`tracing.runtime`,
:mod:`tracing.names`, :mod:`tracing.deadline`, :mod:`tracing.logs`,
:mod:`tracing.testing`.
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
