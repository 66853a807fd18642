"""The README's tables agree with the code."""

from __future__ import annotations

import re

from tests.agent import ROOT
from tracing import config, names

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_span_table_matches_the_names_module() -> None:
    rows = re.findall(r"^\| `([^`]+)` \|", _section("Span names and attributes"), re.M)
    documented = set(rows)
    expected = names.SPAN_NAMES - set(names.QUERY_SPAN_NAMES)
    assert documented == expected


def test_every_tracing_variable_is_documented() -> None:
    variables = set(re.findall(r"``((?:OTEL|DD|DSQLTRACE)_[A-Z_]+)``", config.__doc__ or ""))
    assert variables
    table = _section("Environment variables")
    missing = sorted(v for v in variables if v not in table)
    assert missing == []


def test_the_two_commands_are_in_the_readme() -> None:
    commands = _section("The two commands")
    assert "make demo" in commands and "make test" in commands
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci
