"""``dsqltrace serve``: the Todo functions in the emulator, behind a local Function URL.

With ``DATABASE_URL`` (or ``CLUSTER_ENDPOINT``) set, the functions use that
database (migrate it first with ``dsqltrace migrate``).  Without either, the
embedded PostgreSQL is started (data in ``.local/pg``), migrated, and the
functions connect to it the way they connect to Aurora DSQL: an IAM auth
token made by boto3 as the password (with placeholder credentials when none
are configured: the local server does not check it), and TLS with
``sslmode=verify-full`` against the throwaway CA.  Spans go where the
``OTEL_*`` variables say; by default to the local collector on
``http://127.0.0.1:4318``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from dsqltrace.app import (
    OPENAPI_PATH,
    ROOT,
    function_env,
    openapi_document,
    todo_functions,
    todo_routes,
)
from dsqltrace.emulator.server import Emulator
from dsqltrace.httpserver import run as run_server
from dsqltrace.pg import EmbeddedPostgres

#: Where the local stack keeps its data (``DSQLTRACE_DATA_DIR`` overrides).
LOCAL = Path(os.environ.get("DSQLTRACE_DATA_DIR") or ROOT / ".local")


def local_database(folder: Path = LOCAL / "pg") -> tuple[EmbeddedPostgres, dict[str, str]]:
    """Start (and migrate) the embedded PostgreSQL; the environment that reaches it as DSQL."""
    server = EmbeddedPostgres(folder)
    server.start()
    env = {
        "CLUSTER_ENDPOINT": "localhost",
        "PGPORT": str(server.port),
        "PGSSLROOTCERT": str(server.ca_file),
        "PGSSLNEGOTIATION": "postgres",  # PostgreSQL 15 has no direct TLS negotiation
    }
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        env["AWS_ACCESS_KEY_ID"] = "AKIALOCALDSQLTRACE00"
        env["AWS_SECRET_ACCESS_KEY"] = "local-placeholder-not-a-secret"  # noqa: S105
    migrate_with(env)
    return server, env


@contextlib.contextmanager
def environ(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set, put back as it was afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def migrate_with(env: dict[str, str]) -> list[str]:
    from handlers.database import Database
    from handlers.schema import migrate

    with environ(env):
        database = Database.from_env()
        try:
            return migrate(database)
        finally:
            database.close()


async def serve(args: argparse.Namespace, db_env: dict[str, str]) -> None:
    env = function_env(db_env)
    env.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    records = args.records
    if records is not None:
        records.parent.mkdir(parents=True, exist_ok=True)
    log = args.log.open("a", encoding="utf-8") if args.log else None
    emulator = Emulator(
        todo_functions(
            env=env,
            memory_mb=args.memory,
            timeout_s=args.timeout,
            max_environments=args.max_environments,
            idle_timeout_s=args.idle_timeout,
            limit_cpu=not args.no_cpu_limit,
            max_concurrency=args.max_concurrency,
            snapstart=args.snapstart,
        ),
        todo_routes(),
        task_root=ROOT,
        records=records,
        log=log,
        freeze=not args.no_freeze,
        documents={OPENAPI_PATH: openapi_document()},
    )
    port = await emulator.start(args.host, args.port)
    print(
        f"Function URL listening on http://{args.host}:{port} "
        f"(OpenAPI at http://{args.host}:{port}{OPENAPI_PATH})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    created = emulator.environments_created()
    await emulator.stop()
    print(
        f"stopped: {emulator.invocations} invocations, environments created {created}", flush=True
    )
    if log is not None:
        log.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="Function URL port (default 3000)")
    parser.add_argument(
        "--memory",
        type=int,
        default=256,
        help="function memory, MB (default 256, the CDK stack's); CPU is memory/1769 of one core",
    )
    parser.add_argument(
        "--no-cpu-limit",
        action="store_true",
        help="run environments unthrottled (default: memory's share of CPU, where cgroups allow)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="function timeout, s (default 30)"
    )
    parser.add_argument(
        "--max-environments",
        type=int,
        default=32,
        help="concurrency limit per function (default 32); beyond it: 429",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="Lambda Managed Instances: invocations one environment serves at once, one "
        "awslambdaric worker process each, never frozen (default: on-demand Lambda)",
    )
    parser.add_argument(
        "--dsql-proxy",
        action="store_true",
        help="put DSQL's connection rules between the functions and the embedded PostgreSQL: "
        "100 new connections a second (burst 1,000), 60-minute connections, the IAM token "
        "checked (dsqltrace.dsqlproxy)",
    )
    parser.add_argument(
        "--snapstart",
        action="store_true",
        help="SnapStart: run init once at startup (publication) and serve cold starts by "
        "restoring copies of it (forks of the snapshot's process; see docs/local-stack.md)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="retire environments idle this long, s (default: never)",
    )
    parser.add_argument(
        "--no-freeze", action="store_true", help="do not freeze environments between invocations"
    )
    parser.add_argument(
        "--records",
        type=Path,
        default=LOCAL / "invocations.jsonl",
        help="invocation and environment records (for the report)",
    )
    parser.add_argument(
        "--log", type=Path, default=None, help="emulator log file (default: stderr)"
    )


def run(args: argparse.Namespace) -> int:
    server = None
    if os.environ.get("DATABASE_URL") or os.environ.get("CLUSTER_ENDPOINT"):
        db_env: dict[str, str] = {}
    else:
        server, db_env = local_database()
        print(
            f"embedded PostgreSQL on 127.0.0.1:{server.port} (data in {server.folder})", flush=True
        )
    proxy = None
    if args.dsql_proxy and server is not None:
        from dsqltrace import dsqlproxy

        proxy = dsqlproxy.front(server, db_env)
        print(
            f"DSQL's connection rules (rate, age, IAM token) on 127.0.0.1:{db_env['PGPORT']}",
            flush=True,
        )
    try:
        run_server(serve(args, db_env))
    finally:
        if proxy is not None:
            from dsqltrace import dsqlproxy

            print(dsqlproxy.stop(proxy), flush=True)
        if server is not None:
            server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsqltrace serve")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
