"""The Todo API's own span names: one business span per operation, and its query spans.

The toolkit's names (``aws.lambda``, ``dsql.connect``...) are in
:mod:`tracing.names`; these are the application's.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DELETE_TODO",
    "GET_TODO",
    "OPERATION_NAMES",
    "QUERY_SPAN_NAMES",
    "QUERY_TODOS",
    "SAVE_TODO",
    "UPDATE_TODO",
]

#: The business spans (one per Todo API operation); each is its own Datadog operation.
SAVE_TODO: Final = "Save Todo"
QUERY_TODOS: Final = "Query Todos"
GET_TODO: Final = "Get Todo"
UPDATE_TODO: Final = "Update Todo"
DELETE_TODO: Final = "Delete Todo"

#: The query span names (Datadog resources of ``postgresql.query``) the API emits.
QUERY_SPAN_NAMES: Final = ("INSERT todos", "SELECT todos", "UPDATE todos", "DELETE todos")

#: Every Datadog operation name of the application's own.
OPERATION_NAMES: Final = frozenset({SAVE_TODO, QUERY_TODOS, GET_TODO, UPDATE_TODO, DELETE_TODO})
