"""The select function: ``GET /todos`` (newest first, paginated) and ``GET /todos/{id}``.

Lambda handler: ``handlers.select.handler``.  Init and SnapStart as in
:mod:`handlers.insert`.
"""

from handlers.api import READ_OPERATIONS, TodoApi, build_handler
from handlers.database import Database
from handlers.store import TodoStore
from tracing import setup_tracing

__all__ = ["database", "handler"]


setup_tracing()

database = Database.for_lambda()
handler = build_handler(TodoApi(TodoStore(database)), READ_OPERATIONS)
