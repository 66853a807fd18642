"""Test PostgreSQL servers: the embedded one, in a folder the ``postgres`` user can reach."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dsqltrace.pg import EmbeddedPostgres


def new_server() -> EmbeddedPostgres:
    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-test-pg-"))
    folder.chmod(0o755)  # as root the server runs as `postgres`, which must enter it
    server = EmbeddedPostgres(folder / "pg")
    server.start()
    return server


def migrate(server: EmbeddedPostgres) -> None:
    from handlers.database import Database, Settings
    from handlers.schema import migrate as apply

    old = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = server.url()
    try:
        database = Database(Settings.from_env())
        apply(database)
        database.close()
    finally:
        if old is None:
            del os.environ["DATABASE_URL"]
        else:
            os.environ["DATABASE_URL"] = old
