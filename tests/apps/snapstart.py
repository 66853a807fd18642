"""A SnapStart function for the emulator tests: the handlers' own Database and hooks.

Init connects (as :mod:`handlers.insert` does) and remembers that connection's
backend pid; each invocation answers with the pid its query ran on, the pid
of init's connection, and the process id.  ``APP_HOOKS=false`` leaves the
app's own hooks out (the emulator then hands the restored copy init's dead
connection, and the handlers reconnect).
"""

from __future__ import annotations

import json
import os

from handlers.database import Database
from tracing import setup_tracing, snapstart, traced_handler

setup_tracing()

database = Database.from_env()
database.warm_up()
INIT_PID = database.connection().info.backend_pid
if os.environ.get("APP_HOOKS", "true") != "false":
    snapstart.on_snapshot(database.before_snapshot)
    snapstart.on_restore(database.after_restore)


@traced_handler
def handler(event, context):
    def work(conn):
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    pid = database.run(work, idempotent=True)
    body = {"pid": pid, "init_pid": INIT_PID, "process": os.getpid()}
    return {"statusCode": 200, "body": json.dumps(body)}
