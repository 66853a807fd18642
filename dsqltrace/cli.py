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

    from dsqltrace import collector, dashboards, demo, load, plans, serve

    # Each of these modules has add_arguments(parser) and run(args).
    modules = {
        "demo": (demo, "run the seed's experiment locally and report"),
        "serve": (serve, "the Todo functions in the Lambda emulator"),
        "collector": (collector, "a local OTLP/HTTP trace receiver"),
        "load": (load, "virtual users against the Todo API"),
        "dashboards": (dashboards, "validate or push the Datadog dashboards"),
        "plans": (plans, "the seed's select beside the Todo API's, explained, over 100k todos"),
    }
    for name, (module, text) in modules.items():
        module.add_arguments(commands.add_parser(name, help=text))
        handlers[name] = module.run

    sub = commands.add_parser("report", help="latency report from a run folder")
    sub.add_argument("--dir", type=Path, default=Path(".local"), help="the run folder")
    sub.add_argument("--out", type=Path, default=None, help="where to write (default: --dir)")
    handlers["report"] = _report

    commands.add_parser("migrate", help="apply the schema (same settings as the handlers)")
    handlers["migrate"] = _migrate

    args = parser.parse_args(argv)
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
