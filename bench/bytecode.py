"""What shipping bytecode saves at each cold start: the Lambda asset imported from a
read-only-like folder with and without its ``.pyc`` files, in one run.

    python -m bench.bytecode [--rounds 9]

The asset is built by :func:`infra.asset.build` for this machine (its
architecture and Python, so that it can run here) into a temporary folder;
a copy without ``__pycache__`` folders stands for what ``infra.asset`` built
before it compiled.  Each round starts a fresh interpreter (``-S``, no site
packages; ``PYTHONDONTWRITEBYTECODE`` as on Lambda's read-only code folder) that
imports what ``handlers.insert`` imports at init, and prints the time taken;
medians of the alternating rounds.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

IMPORTS = (
    "tracing, tracing.setup, tracing.delivery, tracing.export, tracing.db, "
    "opentelemetry.sdk.trace, handlers.api, handlers.database, handlers.store"
)
_CODE = (
    "import sys, time; sys.path.insert(0, {folder!r}); t = time.perf_counter(); "
    "import " + IMPORTS + "; print((time.perf_counter() - t) * 1000)"
)


def cold_import_ms(folder: Path) -> float:
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-S", "-c", _CODE.format(folder=str(folder))],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def main(argv: list[str] | None = None) -> int:
    from infra.asset import build, size_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    work = Path(tempfile.mkdtemp(prefix="bytecode-"))
    compiled = build(work / "with-pyc", arch=arch, python=version)
    source = work / "source-only"
    shutil.copytree(compiled, source, ignore=shutil.ignore_patterns("__pycache__"))
    if not any(compiled.rglob("*.pyc")):
        print(f"no Python {version} interpreter compiled the asset: nothing to compare")
        return 1
    figures: dict[str, list[float]] = {"source only (before)": [], "with .pyc (now)": []}
    for _ in range(args.rounds):
        figures["source only (before)"].append(cold_import_ms(source))
        figures["with .pyc (now)"].append(cold_import_ms(compiled))
    before = statistics.median(figures["source only (before)"])
    print(
        f"cold import of the Lambda asset ({arch}, Python {version}), {args.rounds} rounds; "
        f"asset {size_of(source) / 1e6:.1f} MB without bytecode, "
        f"{size_of(compiled) / 1e6:.1f} MB with:"
    )
    for name, values in figures.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {name:<22} {median:6.1f} ms  ({median / before:.2f}x; rounds {rounds})")
    saved = before - statistics.median(figures["with .pyc (now)"])
    print(f"  saved per cold start:  {saved:.1f} ms")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
