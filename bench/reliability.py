"""The reliability figures: run the fault, fuzz and secret suites and tabulate what they measured.

    python -m bench.reliability        # or: make reliability

It runs ``tests/test_reliability.py``, ``tests/test_fuzz.py`` (real
emulator, collector and PostgreSQL processes) and ``tests/test_hostile.py``
(hostile input and delivery edge cases, against loopback servers and
PostgreSQL) with ``DSQLTRACE_FIGURES`` set,
so the figures are the ones the assertions were made on, and writes
``bench/results/reliability.md``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "reliability.md"


def run_suites() -> tuple[list[dict], int]:
    figures = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    env = {**os.environ, "DSQLTRACE_FIGURES": str(figures)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_reliability.py",
            "tests/test_fuzz.py",
            "tests/test_hostile.py",
        ],
        cwd=ROOT,
        env=env,
    )
    lines = [json.loads(line) for line in figures.read_text().splitlines() if line.strip()]
    figures.unlink()
    return lines, result.returncode


def table(rows: list[dict], passed: bool) -> str:
    hostile = [r for r in rows if r["scenario"].startswith("hostile: ")]
    faults = [r for r in rows if r["scenario"] not in ("fuzz", "secrets") and r not in hostile]
    fuzz = next((r for r in rows if r["scenario"] == "fuzz"), {})
    secrets = next((r for r in rows if r["scenario"] == "secrets"), {})
    requests_under_fault = sum(r.get("requests", 0) for r in faults)
    lost = sum(r.get("lost_acknowledged_writes", 0) for r in faults)
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores), `make reliability`; suites {'passed' if passed else 'FAILED'}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| faults injected and survived | {len(faults)} |",
        f"| requests sent under fault | {requests_under_fault} |",
        f"| acknowledged writes lost | {lost} |",
        f"| fuzz cases tried | {fuzz.get('cases', 0)} |",
        f"| 5xx found by fuzzing | {fuzz.get('server_errors', 0)} |",
        f"| strings not stored exactly as sent | {fuzz.get('stored_mismatches', 0)} |",
        f"| secrets found in spans, logs and responses | {secrets.get('secrets_found', 0)} "
        f"(in {secrets.get('bytes_searched', 0) / 1e6:.1f} MB) |",
        "",
        "| fault | what was measured |",
        "|---|---|",
    ]
    for row in faults:
        lines.append(f"| {row['scenario']} | {_detail(row)} |")
    lines += ["", "| hostile input or edge case | what was measured |", "|---|---|"]
    for row in hostile:
        lines.append(f"| {row['scenario'].removeprefix('hostile: ')} | {_detail(row)} |")
    return "\n".join(lines)


def _detail(row: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.items() if k != "scenario")


def main() -> int:
    rows, code = run_suites()
    text = table(rows, code == 0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("# Reliability\n\n" + text + "\n")
    print("\n" + text + f"\n\nwritten to {OUT.relative_to(ROOT)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
