"""The routes of the Todo API, and how failures become status codes.

Client mistakes are 4xx with the JSON error body; a database that cannot be
reached in time, or conflicts that outlast the retries, are 503 with
``Retry-After``.  Only a bug of ours is a 500, and its body says nothing about
the cause (the log and the span do).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg

from handlers.database import ConflictRetriesExhausted, DatabaseUnavailable
from handlers.http import HttpError, Request, Response, Router, error_response, parse_event
from handlers.store import TodoStore
from handlers.todos import NewTodo, Page, TodoChanges, encode_cursor, parse_id
from tracing import traced_handler
from tracing.spans import error_message

__all__ = [
    "READ_OPERATIONS",
    "RETRY_AFTER_S",
    "WRITE_OPERATIONS",
    "TodoApi",
    "build_handler",
    "respond",
]


logger = logging.getLogger("handlers")

#: Time kept back from the invocation's deadline to answer.
_DEADLINE_MARGIN_S = 0.5
RETRY_AFTER_S = "1"

#: The operations of each Lambda function.
WRITE_OPERATIONS = ("create", "update", "delete")
READ_OPERATIONS = ("list", "get")


class TodoApi:
    """The API's operations, each from a :class:`Request` to a :class:`Response`."""

    def __init__(self, store: TodoStore) -> None:
        self.store = store

    def create(self, request: Request) -> Response:
        new = NewTodo.parse(request.json_object())
        todo = self.store.create(uuid.uuid4(), new, deadline=request.deadline)
        return Response(201, todo.to_json(), {"location": f"/todos/{todo.id}"})

    def list(self, request: Request) -> Response:
        page = Page.parse(request.query)
        todos, more = self.store.list(page, deadline=request.deadline)
        next_cursor = encode_cursor(todos[-1]) if more and todos else None
        return Response(200, {"todos": [t.to_json() for t in todos], "next": next_cursor})

    def get(self, request: Request) -> Response:
        todo = self.store.get(self._id(request), deadline=request.deadline)
        if todo is None:
            raise _not_found(request)
        return Response(200, todo.to_json())

    def update(self, request: Request) -> Response:
        todo_id = self._id(request)
        changes = TodoChanges.parse(request.json_object())
        todo = self.store.update(todo_id, changes, deadline=request.deadline)
        if todo is None:
            raise _not_found(request)
        return Response(200, todo.to_json())

    def delete(self, request: Request) -> Response:
        if not self.store.delete(self._id(request), deadline=request.deadline):
            raise _not_found(request)
        return Response(204)

    @staticmethod
    def _id(request: Request) -> uuid.UUID:
        todo_id = parse_id(request.path_params["id"])
        if todo_id is None:
            raise _not_found(request)
        return todo_id

    def router(self, operations: Iterable[str]) -> Router:
        """A router with the routes of ``operations``."""
        table: dict[str, tuple[str, str]] = {
            "create": ("POST", "/todos"),
            "list": ("GET", "/todos"),
            "get": ("GET", "/todos/{id}"),
            "update": ("PATCH", "/todos/{id}"),
            "delete": ("DELETE", "/todos/{id}"),
        }
        router = Router()
        for operation in operations:
            method, template = table[operation]
            router.add(method, template, getattr(self, operation))
        return router


def _not_found(request: Request) -> HttpError:
    return HttpError(404, "not_found", f"no todo at {request.path}")


def build_handler(api: TodoApi, operations: Iterable[str]) -> Callable[[Any, Any], Any]:
    """The Lambda handler serving ``operations``, traced."""
    router = api.router(operations)

    @traced_handler(routes=router.templates)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        return respond(router, event, context).to_lambda()

    return handler


#: 503 answers: the error code and message of each kind of unavailability.
_UNAVAILABLE: dict[type[Exception], tuple[str, str]] = {
    DatabaseUnavailable: (
        "database_unavailable",
        "the database cannot be reached right now; retry later",
    ),
    ConflictRetriesExhausted: ("conflict", "too many concurrent changes to this todo; retry later"),
}


def respond(router: Router, event: Any, context: Any) -> Response:
    """Route one event; every failure becomes a JSON error response."""
    try:
        request = parse_event(event)
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is not None:
            request.deadline = time.monotonic() + remaining() / 1000 - _DEADLINE_MARGIN_S
        return router.dispatch(request)
    except HttpError as exc:
        return exc.response()
    except (DatabaseUnavailable, ConflictRetriesExhausted) as exc:
        code, message = _UNAVAILABLE[type(exc)]
        logger.warning("%s: %s", code, exc)
        return error_response(503, code, message, headers={"retry-after": RETRY_AFTER_S})
    except psycopg.Error as exc:  # the server's message and DETAIL may quote row values
        logger.error("unexpected database error: %s", error_message(exc))
        return error_response(500, "internal_error", "internal error")
    except Exception:
        logger.exception("unexpected error")
        return error_response(500, "internal_error", "internal error")
