"""Cold start of the toolkit at two git revisions, paired: did a change make it worse?

    python -m bench.revisions BASE [HEAD] [--rounds 20]

Each revision is checked out into a temporary worktree and compiled to
bytecode (as the Lambda asset is).  Each round starts, in shuffled order, one
fresh interpreter per revision that imports ``tracing``, sets it up (exporter
``none``: the figure is the toolkit's own work, not a collector's), wraps a
handler and invokes it once with a Function URL event, then exits; the time
is from the interpreter's start to the end of that first invocation.  The
figure is the median of the per-round differences, with both medians.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_FIRST_INVOCATION = """
import sys
sys.path.insert(0, {tree!r})
from tracing import TracingConfig, setup_tracing, traced_handler
setup_tracing(TracingConfig(service_name="bench", exporter="none"))

class Context:
    function_name = "bench"
    aws_request_id = "r-1"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    def get_remaining_time_in_millis(self):
        return 30000

@traced_handler(routes=["/todos", "/todos/{{id}}"])
def handler(event, context):
    return {{"statusCode": 201}}

event = {{"version": "2.0", "routeKey": "$default", "rawPath": "/todos",
          "headers": {{"user-agent": "bench"}},
          "requestContext": {{"http": {{"method": "POST", "path": "/todos",
                                        "sourceIp": "127.0.0.1", "userAgent": "bench"}}}}}}
handler(event, Context())
"""


def _worktree(revision: str, into: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(into), revision], cwd=ROOT, check=True
    )
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "tracing")], check=True)
    return into


def first_invocation_ms(tree: Path) -> float:
    script = _FIRST_INVOCATION.format(tree=str(tree))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tree)
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="revisions-"))
    trees = {rev: _worktree(rev, work / f"tree{i}") for i, rev in enumerate((args.base, args.head))}
    try:
        times: dict[str, list[float]] = {rev: [] for rev in trees}
        for tree in trees.values():  # warm the page cache
            first_invocation_ms(tree)
        for _ in range(args.rounds):
            order = list(trees.items())
            random.shuffle(order)
            for rev, tree in order:
                times[rev].append(first_invocation_ms(tree))
        base, head = times[args.base], times[args.head]
        added = statistics.median(h - b for h, b in zip(head, base, strict=True))
        print(f"process start to end of first invocation, {args.rounds} paired rounds:")
        for rev, values in times.items():
            print(f"  {rev:<12} median {statistics.median(values):7.1f} ms")
        print(f"  {args.head} - {args.base}: {added:+.1f} ms (median of paired differences)")
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
