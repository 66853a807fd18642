"""The reference page's tables and the config docstring agree with the code; the README
keeps the two commands and links every page of docs/."""

from __future__ import annotations

import re

from handlers import names as app_names
from tests.agent import ROOT
from tracing import config, names

README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
#: Reads of the environment in the project's code (not writes for child processes).
_READS = (
    re.compile(r"""(?:environ|env)\.get\(\s*["']([A-Z_][A-Z0-9_]*)["']"""),
    re.compile(r"""getenv\(\s*["']([A-Z_][A-Z0-9_]*)["']"""),
    re.compile(r"""environ\[\s*["']([A-Z_][A-Z0-9_]*)["']\s*\](?!\s*=[^=])"""),
    re.compile(r"""["']([A-Z_][A-Z0-9_]*)["']\s+(?:not\s+)?in\s+(?:os\.)?environ"""),
)
#: Read, but only to hand on to a child process as they are.
_PASSED_ON = {"PATH"}


def _section(title: str, text: str = REFERENCE) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_span_table_matches_the_names_modules() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", _section("Span names and attributes"), re.M)
    documented = {name for name, _ in rows}
    assert documented == names.OPERATION_NAMES | app_names.OPERATION_NAMES
    spans = {name for name, kind in rows if kind.startswith("span")}
    assert spans == names.SPAN_NAMES | app_names.OPERATION_NAMES
    assert {name for name, kind in rows if kind.startswith("operation")} == {
        names.OPERATION_LAMBDA,
        names.OPERATION_DB_QUERY,
    }


def test_every_setting_is_in_the_docstring_and_the_readme() -> None:
    table = _section("Environment variables")
    doc = config.__doc__ or ""
    for setting in config.settings():
        for variable in setting.variables:
            assert f"``{variable}``" in doc, variable
            assert f"`{variable}`" in table, variable
    documented = set(re.findall(r"``((?:OTEL|DD|DSQLTRACE)_[A-Z_]+)``", doc))
    declared = {v for s in config.settings() for v in s.variables}
    assert documented == declared


def test_every_variable_the_project_reads_is_documented() -> None:
    read: dict[str, str] = {}
    for folder in ("tracing", "handlers", "dsqltrace", "infra", "loadtest"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for pattern in _READS:
                for variable in pattern.findall(text):
                    read.setdefault(variable, str(path.relative_to(ROOT)))
    read.update({v: "tracing/config.py" for s in config.settings() for v in s.variables})
    assert len(read) > 30
    table = _section("Environment variables")
    missing = {
        v: where for v, where in read.items() if v not in _PASSED_ON and f"`{v}`" not in table
    }
    assert missing == {}


def test_the_two_commands_are_in_the_readme() -> None:
    commands = _section("The two commands", README)
    assert "make demo" in commands and "make test" in commands
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci


def test_the_readme_links_every_page_and_every_link_resolves() -> None:
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = set(re.findall(r"\]\(docs/([a-z-]+\.md)(?:#[a-z0-9-]+)?\)", README))
    assert linked == pages
    assert len(README.splitlines()) < 150  # a guide, not a lab notebook
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text()
        for target, anchor in re.findall(r"\]\(((?:docs/)?[a-z-]+\.md)?(?:#([a-z0-9-]+))?\)", text):
            if not target and not anchor:
                continue
            path = (page.parent / target) if target else page
            assert path.exists(), (page.name, target)
            if anchor:
                headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
                slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
                assert anchor in slugs, (page.name, target, anchor)
