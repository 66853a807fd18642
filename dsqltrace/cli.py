"""``dsqltrace``: the local stack's one console command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def _migrate(args: argparse.Namespace) -> int:
    from handlers.database import Database
    from handlers.schema import migrate

    database = Database.from_env()
    try:
        for statement in migrate(database):
            print(f"applied: {statement.splitlines()[0]}")
    finally:
        database.close()
    return 0


def _report(args: argparse.Namespace) -> int:
    from dsqltrace.report import render

    figures = render.write(args.dir, args.out)
    print(render.terminal(figures))
    print(f"\nreport: {(args.out or args.dir) / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsqltrace", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    from dsqltrace import collector, dashboards, demo, load, serve

    sub = commands.add_parser("demo", help="run the seed's experiment locally and report")
    demo.add_arguments(sub)
    handlers["demo"] = demo.run

    sub = commands.add_parser("serve", help="the Todo functions in the Lambda emulator")
    serve.add_arguments(sub)
    handlers["serve"] = serve.run

    sub = commands.add_parser("collector", help="a local OTLP/HTTP trace receiver")
    collector.add_arguments(sub)
    handlers["collector"] = collector.run

    sub = commands.add_parser("load", help="virtual users against the Todo API")
    load.add_arguments(sub)
    handlers["load"] = load.run

    sub = commands.add_parser("report", help="latency report from a run folder")
    sub.add_argument("--dir", type=Path, default=Path(".local"), help="the run folder")
    sub.add_argument("--out", type=Path, default=None, help="where to write (default: --dir)")
    handlers["report"] = _report

    sub = commands.add_parser("dashboards", help="validate or push the Datadog dashboards")
    dashboards.add_arguments(sub)
    handlers["dashboards"] = dashboards.run

    commands.add_parser("migrate", help="apply the schema (same settings as the handlers)")
    handlers["migrate"] = _migrate

    args = parser.parse_args(argv)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
