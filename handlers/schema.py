"""Apply ``schema.sql``: one statement per transaction, safe to run twice.

On Aurora DSQL an index is built by ``CREATE INDEX ASYNC``, which returns a job
id; the migration waits for it with ``sys.wait_for_job``.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Any

from handlers.database import Database

__all__ = ["engine_of", "migrate", "statements"]


def statements(engine: str) -> list[str]:
    """The schema's statements for ``engine`` (``"dsql"`` or ``"postgres"``)."""
    text = resources.files("handlers").joinpath("schema.sql").read_text()
    result: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        for prefix in ("-- dsql:", "-- postgres:"):
            if stripped.startswith(prefix):
                if prefix == f"-- {engine}:":
                    result.append(stripped[len(prefix) :].strip().rstrip(";"))
                break
        else:
            if stripped.startswith("--") or not stripped:
                continue
            current.append(line)
            if stripped.endswith(";"):
                result.append("\n".join(current).strip().rstrip(";"))
                current = []
    return result


def engine_of(database: Database) -> str:
    """``dsql`` for an Aurora DSQL endpoint (``*.on.aws``), else ``postgres``.

    ``DB_ENGINE`` (``dsql`` or ``postgres``) overrides the guess.
    """
    forced = os.environ.get("DB_ENGINE", "").strip().lower()
    if forced in ("dsql", "postgres"):
        return forced
    endpoint = database.settings.endpoint
    if database.settings.database_url is None and endpoint and endpoint.endswith(".on.aws"):
        return "dsql"
    return "postgres"


def migrate(database: Database) -> list[str]:
    """Apply the schema; returns the statements run."""
    engine = engine_of(database)
    conn: Any = database.connection()
    done = []
    for statement in statements(engine):
        with conn.transaction():
            cur = conn.execute(statement)
            job = cur.fetchone() if engine == "dsql" and cur.description else None
        if job and job[0]:
            conn.execute("SELECT sys.wait_for_job(%s)", (job[0],))
        done.append(statement)
    return done
