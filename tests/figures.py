"""Figures the reliability suite measures, collected for `make reliability` (and docs/reliability.md).

When ``DSQLTRACE_FIGURES`` names a file, :func:`record` appends one JSON line to
it; otherwise it does nothing (the tests' assertions are the same either way).
"""

from __future__ import annotations

import json
import os
from typing import Any


def record(scenario: str, **figures: Any) -> None:
    path = os.environ.get("DSQLTRACE_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"scenario": scenario, **figures}) + "\n")
