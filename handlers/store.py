"""The Todo API's SQL, one business span per operation (``Save Todo``, ``Query Todos``...).

Statements are parameterised (values never reach ``db.query.text``), the list
is ordered newest first with a keyset cursor, and no statement needs what
Aurora DSQL lacks (foreign keys, sequences, SAVEPOINT).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from handlers import names
from handlers.database import Database
from handlers.todos import NewTodo, Page, Todo, TodoChanges
from tracing import traced

__all__ = ["TodoStore"]


Connection = psycopg.Connection[Any]

INSERT = (
    "INSERT INTO todos (id, name, description, completed) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (id) DO NOTHING "
    "RETURNING id, name, description, completed, created_at, updated_at"
)
SELECT_ONE = (
    "SELECT id, name, description, completed, created_at, updated_at FROM todos WHERE id = %s"
)
SELECT_FIRST_PAGE = (
    "SELECT id, name, description, completed, created_at, updated_at FROM todos "
    "ORDER BY created_at DESC, id DESC LIMIT %s"
)
SELECT_NEXT_PAGE = (
    "SELECT id, name, description, completed, created_at, updated_at FROM todos "
    "WHERE (created_at, id) < (%s, %s) ORDER BY created_at DESC, id DESC LIMIT %s"
)
UPDATE = sql.SQL(
    "UPDATE todos SET {assignments}, updated_at = now() WHERE id = %s "
    "RETURNING id, name, description, completed, created_at, updated_at"
)
DELETE = "DELETE FROM todos WHERE id = %s"


class TodoStore:
    """Todos in the ``todos`` table of ``database``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @traced(names.SAVE_TODO)
    def create(self, todo_id: uuid.UUID, new: NewTodo, *, deadline: float | None) -> Todo:
        """Insert a todo; safe to retry (the id is chosen before the first attempt)."""

        def work(conn: Connection) -> Todo:
            cur = conn.cursor(row_factory=class_row(Todo))
            cur.execute(INSERT, (todo_id, new.name, new.description, new.completed))
            row = cur.fetchone()
            if row is None:  # a retried COMMIT had already written it
                row = cur.execute(SELECT_ONE, (todo_id,)).fetchone()
            assert row is not None
            return row

        return self.database.run(work, idempotent=True, deadline=deadline)

    @traced(names.QUERY_TODOS)
    def list(self, page: Page, *, deadline: float | None) -> tuple[list[Todo], bool]:
        """Up to ``page.limit`` todos, newest first; and whether more follow."""

        def work(conn: Connection) -> list[Todo]:
            cur = conn.cursor(row_factory=class_row(Todo))
            if page.after is None:
                return cur.execute(SELECT_FIRST_PAGE, (page.limit + 1,)).fetchall()
            created, last_id = page.after
            return cur.execute(SELECT_NEXT_PAGE, (created, last_id, page.limit + 1)).fetchall()

        rows = self.database.run(work, idempotent=True, deadline=deadline)
        return rows[: page.limit], len(rows) > page.limit

    @traced(names.GET_TODO)
    def get(self, todo_id: uuid.UUID, *, deadline: float | None) -> Todo | None:
        def work(conn: Connection) -> Todo | None:
            cur = conn.cursor(row_factory=class_row(Todo))
            return cur.execute(SELECT_ONE, (todo_id,)).fetchone()

        return self.database.run(work, idempotent=True, deadline=deadline)

    @traced(names.UPDATE_TODO)
    def update(
        self, todo_id: uuid.UUID, changes: TodoChanges, *, deadline: float | None
    ) -> Todo | None:
        """Apply ``changes``; None if there is no such todo.  Safe to retry (absolute values)."""
        columns = sorted(changes.values)
        query = UPDATE.format(
            assignments=sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(column)) for column in columns
            )
        )

        def work(conn: Connection) -> Todo | None:
            cur = conn.cursor(row_factory=class_row(Todo))
            params = (*(changes.values[c] for c in columns), todo_id)
            return cur.execute(query, params).fetchone()

        return self.database.run(work, idempotent=True, deadline=deadline)

    @traced(names.DELETE_TODO)
    def delete(self, todo_id: uuid.UUID, *, deadline: float | None) -> bool:
        """Delete a todo; False if there was none.  A COMMIT lost in transit is not retried."""

        def work(conn: Connection) -> bool:
            return bool(conn.execute(DELETE, (todo_id,)).rowcount)

        return self.database.run(work, idempotent=False, deadline=deadline)
