"""The insert function: ``POST /todos``, ``PATCH /todos/{id}``, ``DELETE /todos/{id}``.

Lambda handler: ``handlers.insert.handler``.  Init connects to the database
(token and connect are cold-start phases under ``aws.lambda.init``); with
SnapStart the connection is closed before the snapshot and opened again with a
fresh token after each restore (:meth:`handlers.database.Database.after_restore`).
"""

from handlers.api import WRITE_OPERATIONS, TodoApi, build_handler
from handlers.database import Database
from handlers.store import TodoStore
from tracing import setup_tracing

__all__ = ["database", "handler"]


setup_tracing()

database = Database.for_lambda()
handler = build_handler(TodoApi(TodoStore(database)), WRITE_OPERATIONS)
