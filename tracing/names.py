"""The toolkit's vocabulary: span names, Datadog operation names, attribute keys.

Code, tests, dashboards and docs take their names from here (the Todo
application's own span names live in ``handlers/names.py``).  Dashboards are
validated against :data:`OPERATION_NAMES`, and the span table of docs/reference.md is
checked against this module by the tests.

Two kinds of name, kept apart:

- an **OpenTelemetry span name** is what the OTLP span is called; for the
  invocation and for queries it is built per request (``"POST /todos"``,
  ``"INSERT todos"``), for the others it is fixed (``dsql.connect``);
- a **Datadog operation name** (attribute ``operation.name``) is what Datadog
  groups by, and what dashboards query; the per-request name becomes the
  Datadog *resource*.

The naming rule for connections: ``tracing.db`` is generic psycopg, so its
spans are named for PostgreSQL (``postgresql.connect``, ``postgresql.query``)
on any server.  Work that only happens with Aurora DSQL is named ``dsql.*``:
the IAM token (``dsql.token.generate``) and a connection authenticated with
one (``dsql.connect``, made by :class:`tracing.db.DsqlConnection`).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BATCH_ITEM_FAILURES",
    "CLIENT_ADDRESS",
    "CLOUD_ACCOUNT_ID",
    "CLOUD_PLATFORM",
    "CLOUD_PROVIDER",
    "CLOUD_REGION",
    "CLOUD_RESOURCE_ID",
    "CODE_FUNCTION_NAME",
    "DB_COLLECTION_NAME",
    "DB_CONNECT",
    "DB_ERROR_CONSTRAINT",
    "DB_EXPLAIN",
    "DB_NAMESPACE",
    "DB_OPERATION_NAME",
    "DB_QUERY_TEXT",
    "DB_RESPONSE_RETURNED_ROWS",
    "DB_RESPONSE_STATUS_CODE",
    "DB_SYSTEM_NAME",
    "DB_USER",
    "DD_OPERATION_NAME",
    "DD_RESOURCE_NAME",
    "DD_SPAN_TYPE",
    "DEPLOYMENT_ENVIRONMENT",
    "DEPLOYMENT_ENVIRONMENT_LEGACY",
    "DPU_ESTIMATE",
    "DPU_PREFIX",
    "DPU_TOTAL",
    "DSQL_CONNECT",
    "DSQL_CONNECT_RETRY_COUNT",
    "DSQL_EXPLAIN",
    "DSQL_OCC_RETRY_COUNT",
    "DSQL_RECONNECT",
    "DSQL_TOKEN_GENERATE",
    "DSQL_TOKEN_SIGNER",
    "ERROR_TYPE",
    "EXCEPTION_ESCAPED",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "EXCEPTION_TYPE",
    "FAAS_COLDSTART",
    "FAAS_INSTANCE",
    "FAAS_INVOCATION_ID",
    "FAAS_MAX_MEMORY",
    "FAAS_NAME",
    "FAAS_TIME",
    "FAAS_TRIGGER",
    "FAAS_VERSION",
    "HTTP_REQUEST_METHOD",
    "HTTP_RESPONSE_STATUS_CODE",
    "HTTP_ROUTE",
    "INIT_PHASE",
    "INIT_TYPE",
    "INVOKED_ALIAS",
    "LAMBDA_AFTER_RESTORE_HOOK",
    "LAMBDA_INIT",
    "LAMBDA_SNAPSTART_RESTORE",
    "MESSAGING_BATCH_MESSAGE_COUNT",
    "MESSAGING_DESTINATION_NAME",
    "MESSAGING_MESSAGE_ID",
    "MESSAGING_OPERATION_NAME",
    "MESSAGING_OPERATION_TYPE",
    "MESSAGING_SYSTEM",
    "OPERATION_DB_QUERY",
    "OPERATION_LAMBDA",
    "OPERATION_NAMES",
    "PLAN_ANALYZED",
    "PLAN_EXECUTION_MS",
    "PLAN_NODE_TYPES",
    "PLAN_ROWS",
    "PLAN_ROWS_READ",
    "PLAN_STORAGE_LOOKUPS",
    "PLAN_SUMMARY",
    "PLAN_TEXT",
    "PROACTIVE_INIT",
    "SERVER_ADDRESS",
    "SERVER_PORT",
    "SERVICE_NAME",
    "SERVICE_VERSION",
    "SPAN_NAMES",
    "TRUNCATED_ATTRIBUTES",
    "URL_PATH",
    "USER_AGENT_ORIGINAL",
]

# --- OpenTelemetry span names (fixed ones) ------------------------------------------
#: Parent of the cold-start phases, back-dated to the start of the process.
LAMBDA_INIT: Final = "aws.lambda.init"
#: A SnapStart restore, under the first invocation of a restored environment: Datadog's
#: name (its extension emits a span of this name from the Telemetry API), so one query
#: finds restores whichever side recorded them.
LAMBDA_SNAPSTART_RESTORE: Final = "aws.lambda.snapstart_restore"
#: One after-restore runtime hook (``code.function.name``), under the restore span.
LAMBDA_AFTER_RESTORE_HOOK: Final = "aws.lambda.after_restore_hook"
#: IAM auth-token generation for Aurora DSQL (a local SigV4 presign).
DSQL_TOKEN_GENERATE: Final = "dsql.token.generate"
#: Connection setup with an IAM token (TCP, TLS, authentication): Aurora DSQL.
DSQL_CONNECT: Final = "dsql.connect"
#: Connection setup on any PostgreSQL server (``tracing.db.TracedConnection``).
DB_CONNECT: Final = "postgresql.connect"
#: A statement's plan (``tracing.explain``), on a connection made with an IAM token.
DSQL_EXPLAIN: Final = "dsql.explain"
#: The same on any other PostgreSQL connection.
DB_EXPLAIN: Final = "postgresql.explain"

#: Every fixed OpenTelemetry span name the toolkit emits.
SPAN_NAMES: Final = frozenset(
    {
        LAMBDA_INIT,
        LAMBDA_SNAPSTART_RESTORE,
        LAMBDA_AFTER_RESTORE_HOOK,
        DSQL_TOKEN_GENERATE,
        DSQL_CONNECT,
        DB_CONNECT,
        DSQL_EXPLAIN,
        DB_EXPLAIN,
    }
)

# --- Datadog operation names ----------------------------------------------------------
#: Operation of the per-invocation SERVER span (OTel name ``"{METHOD} {route}"``).
OPERATION_LAMBDA: Final = "aws.lambda"
#: Operation of every query span (OTel name ``"{operation} {table}"``).
OPERATION_DB_QUERY: Final = "postgresql.query"

#: Every Datadog operation name the toolkit emits (fixed span names are their own
#: operation names); a dashboard may query these and the application's own.
OPERATION_NAMES: Final = frozenset({OPERATION_LAMBDA, OPERATION_DB_QUERY, *SPAN_NAMES})

# --- Datadog mapping (read by the Datadog Lambda Extension's OTLP intake and by
# --- ddtrace's OpenTelemetry bridge alike) --------------------------------------
DD_OPERATION_NAME: Final = "operation.name"
DD_RESOURCE_NAME: Final = "resource.name"
DD_SPAN_TYPE: Final = "span.type"

# --- OpenTelemetry semantic conventions (stable names) --------------------------
FAAS_TRIGGER: Final = "faas.trigger"
FAAS_INVOCATION_ID: Final = "faas.invocation_id"
FAAS_COLDSTART: Final = "faas.coldstart"
FAAS_NAME: Final = "faas.name"
FAAS_VERSION: Final = "faas.version"
FAAS_INSTANCE: Final = "faas.instance"
FAAS_MAX_MEMORY: Final = "faas.max_memory"
CLOUD_PROVIDER: Final = "cloud.provider"
CLOUD_PLATFORM: Final = "cloud.platform"
CLOUD_REGION: Final = "cloud.region"
CLOUD_RESOURCE_ID: Final = "cloud.resource_id"
CLOUD_ACCOUNT_ID: Final = "cloud.account.id"
SERVICE_NAME: Final = "service.name"
SERVICE_VERSION: Final = "service.version"
DEPLOYMENT_ENVIRONMENT: Final = "deployment.environment.name"
#: Older Datadog agents read this key only.
DEPLOYMENT_ENVIRONMENT_LEGACY: Final = "deployment.environment"

HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_ROUTE: Final = "http.route"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_PATH: Final = "url.path"
USER_AGENT_ORIGINAL: Final = "user_agent.original"
CLIENT_ADDRESS: Final = "client.address"
ERROR_TYPE: Final = "error.type"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_ESCAPED: Final = "exception.escaped"

DB_SYSTEM_NAME: Final = "db.system.name"
DB_NAMESPACE: Final = "db.namespace"
DB_OPERATION_NAME: Final = "db.operation.name"
DB_COLLECTION_NAME: Final = "db.collection.name"
DB_QUERY_TEXT: Final = "db.query.text"
DB_RESPONSE_STATUS_CODE: Final = "db.response.status_code"
DB_RESPONSE_RETURNED_ROWS: Final = "db.response.returned_rows"
FAAS_TIME: Final = "faas.time"
MESSAGING_SYSTEM: Final = "messaging.system"
MESSAGING_OPERATION_TYPE: Final = "messaging.operation.type"
MESSAGING_OPERATION_NAME: Final = "messaging.operation.name"
MESSAGING_DESTINATION_NAME: Final = "messaging.destination.name"
MESSAGING_BATCH_MESSAGE_COUNT: Final = "messaging.batch.message_count"
MESSAGING_MESSAGE_ID: Final = "messaging.message.id"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# --- This project's own attributes -----------------------------------------------
#: How many times an optimistic-concurrency conflict (SQLSTATE 40001) was retried.
DSQL_OCC_RETRY_COUNT: Final = "dsql.occ.retry_count"
#: How many connection attempts the server refused (53300, 53400) before this one.
DSQL_CONNECT_RETRY_COUNT: Final = "dsql.connect.retry_count"
#: True when the connection was reopened after a dead one was found.
DSQL_RECONNECT: Final = "dsql.reconnect"
#: How the auth token was signed: ``environment`` (credentials in env) or ``boto3``.
DSQL_TOKEN_SIGNER: Final = "dsql.token.signer"
#: The database role a connection signs in as (``admin`` or a custom role).  Not an
#: OpenTelemetry convention (``db.user`` was removed from them); Datadog's database
#: views still read it.
DB_USER: Final = "db.user"
#: The constraint a failed statement violated (the error's values never are recorded).
DB_ERROR_CONSTRAINT: Final = "db.response.constraint_name"
#: True when a phase ran during init and was replayed under ``aws.lambda.init``.
INIT_PHASE: Final = "aws.lambda.init_phase"
#: The plan in one line, first step to last (``"Seq Scan todos → Sort → Limit"``).
PLAN_SUMMARY: Final = "dsql.plan.summary"
#: The plan's node types, root first, each once.
PLAN_NODE_TYPES: Final = "dsql.plan.node_types"
#: Rows the statement produced, and rows its scans read (ANALYZE only).
PLAN_ROWS: Final = "dsql.plan.rows"
PLAN_ROWS_READ: Final = "dsql.plan.rows_read"
#: DSQL: storage round trips made one row at a time (``Storage Lookup`` nodes).
PLAN_STORAGE_LOOKUPS: Final = "dsql.plan.storage_lookups"
#: The explained execution's own time (ANALYZE only).
PLAN_EXECUTION_MS: Final = "dsql.plan.execution_ms"
#: True when the statement was run to be explained (reads), False for plain EXPLAIN.
PLAN_ANALYZED: Final = "dsql.plan.analyzed"
#: The plan's text, every constant replaced by ``?``.
PLAN_TEXT: Final = "dsql.plan.text"
#: DSQL's Statement DPU Estimate: ``dsql.dpu.compute``, ``.read``, ``.write``,
#: ``.multiregionwrite``, ``.total``.
DPU_PREFIX: Final = "dsql.dpu."
DPU_TOTAL: Final = "dsql.dpu.total"
#: On a query span: the total DPU of this statement's latest explain in this environment
#: (DSQL only), so that every request carries an estimate of what its statements cost.
DPU_ESTIMATE: Final = "dsql.dpu.estimate"
#: The function a span's work ran in (an after-restore hook).
CODE_FUNCTION_NAME: Final = "code.function.name"
#: How the environment was initialised, where it is not ``on-demand``: on the first
#: invocation (``provisioned-concurrency``, ``snap-start``), and on the init span that
#: SnapStart delivers before its snapshot (``snap-start``).
INIT_TYPE: Final = "aws.lambda.initialization_type"
#: The alias the function was invoked through (``cloud.resource_id`` has the version).
INVOKED_ALIAS: Final = "aws.lambda.invoked_alias"
PROACTIVE_INIT: Final = "aws.lambda.proactive_initialization"
#: How many attributes were cut to fit an exporter's size limit per span (``xray``).
TRUNCATED_ATTRIBUTES: Final = "tracing.truncated_attributes"
#: How many messages a partial batch response (``batchItemFailures``) reported as failed.
BATCH_ITEM_FAILURES: Final = "aws.lambda.batch_item_failures"
