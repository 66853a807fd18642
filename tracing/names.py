"""Span names and attribute keys: the one source for code, tests, dashboards and docs.

Dashboards (``dashboards/``) are validated against :data:`SPAN_NAMES`, and the
README's span table is checked against this module by the tests, so a rename
here shows up everywhere at once.
"""

from __future__ import annotations

from typing import Final

# --- Span names ---------------------------------------------------------------
#: Datadog operation name of the per-invocation SERVER span.  The OTel span
#: name itself is ``"{METHOD} {route}"`` (``"POST /todos"``); the route is the
#: Datadog resource.
LAMBDA_INVOCATION: Final = "aws.lambda"
#: Parent of the cold-start phases, back-dated to the start of the process.
LAMBDA_INIT: Final = "aws.lambda.init"
#: IAM auth-token generation for Aurora DSQL (a local SigV4 presign).
DSQL_TOKEN_GENERATE: Final = "dsql.token.generate"
#: Connection setup: TCP, TLS, authentication.
DSQL_CONNECT: Final = "dsql.connect"
#: Datadog operation name of every query span.  The OTel span name is
#: ``"{operation} {table}"``, e.g. ``"INSERT todos"``: the Datadog resource.
DB_QUERY: Final = "postgresql.query"
#: The seed's business spans (one per Todo API operation).
SAVE_TODO: Final = "Save Todo"
QUERY_TODOS: Final = "Query Todos"
GET_TODO: Final = "Get Todo"
UPDATE_TODO: Final = "Update Todo"
DELETE_TODO: Final = "Delete Todo"

#: The query span names the Todo API emits.
QUERY_SPAN_NAMES: Final = (
    "INSERT todos",
    "SELECT todos",
    "UPDATE todos",
    "DELETE todos",
)

#: Every operation name a dashboard may query.
SPAN_NAMES: Final = frozenset(
    {
        LAMBDA_INVOCATION,
        LAMBDA_INIT,
        DSQL_TOKEN_GENERATE,
        DSQL_CONNECT,
        DB_QUERY,
        SAVE_TODO,
        QUERY_TODOS,
        GET_TODO,
        UPDATE_TODO,
        DELETE_TODO,
        *QUERY_SPAN_NAMES,
    }
)

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

DB_SYSTEM_NAME: Final = "db.system.name"
DB_NAMESPACE: Final = "db.namespace"
DB_OPERATION_NAME: Final = "db.operation.name"
DB_COLLECTION_NAME: Final = "db.collection.name"
DB_QUERY_TEXT: Final = "db.query.text"
DB_RESPONSE_STATUS_CODE: Final = "db.response.status_code"
DB_RESPONSE_RETURNED_ROWS: Final = "db.response.returned_rows"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"

# --- This project's own attributes -----------------------------------------------
#: How many times an optimistic-concurrency conflict (SQLSTATE 40001) was retried.
DSQL_OCC_RETRY_COUNT: Final = "dsql.occ.retry_count"
#: True when the connection was reopened after a dead one was found.
DSQL_RECONNECT: Final = "dsql.reconnect"
#: How the auth token was signed: ``environment`` (credentials in env) or ``boto3``.
DSQL_TOKEN_SIGNER: Final = "dsql.token.signer"
#: ``"admin"`` or the custom role the token was made for.
DSQL_USER: Final = "db.user"
#: True when a phase ran during init and was replayed under ``aws.lambda.init``.
INIT_PHASE: Final = "aws.lambda.init_phase"
#: Why an invocation was not a cold start although it was the first one.
INIT_TYPE: Final = "aws.lambda.initialization_type"
PROACTIVE_INIT: Final = "aws.lambda.proactive_initialization"
