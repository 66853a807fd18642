"""A run folder: what the collector, the emulator and the load runner wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPANS_FILE = "spans.jsonl"
INVOCATIONS_FILE = "invocations.jsonl"
CLIENT_FILE = "client.jsonl"
#: What ``dsqltrace load`` says of the whole run: users, rate, the machine's CPU use.
LOAD_FILE = "load.json"


@dataclass
class Span:
    """One span as the collector stored it, flattened."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    service: str
    error: bool
    received_ns: int
    #: How the span reached the collector: ``otlp``, or ``logs`` (an otlp-stdout line).
    via: str = "otlp"

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def is_root(self) -> bool:
        return self.attributes.get("operation.name") == "aws.lambda"

    @property
    def operation(self) -> str:
        """The name the report groups by: ``aws.lambda`` for roots, else the span name."""
        return "aws.lambda" if self.is_root else self.name


def _value(v: dict[str, Any]) -> Any:
    if not v:
        return None
    kind, value = next(iter(v.items()))
    if kind == "intValue":
        return int(value)
    if kind == "arrayValue":
        return [_value(x) for x in value.get("values", [])]
    return value


def read_spans(path: Path) -> list[Span]:
    spans: list[Span] = []
    if not path.exists():
        return spans
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        received = int(record.get("received_ns", 0))
        via = str(record.get("via", "otlp"))
        for rs in record["request"].get("resourceSpans", []):
            resource = {
                a["key"]: _value(a.get("value", {}))
                for a in rs.get("resource", {}).get("attributes", [])
            }
            service = str(resource.get("service.name", "?"))
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    attrs = {a["key"]: _value(a.get("value", {})) for a in s.get("attributes", [])}
                    spans.append(
                        Span(
                            trace_id=s.get("traceId", ""),
                            span_id=s.get("spanId", ""),
                            parent_id=s.get("parentSpanId", ""),
                            name=s.get("name", ""),
                            kind=int(s.get("kind", 0)),
                            start_ns=int(s.get("startTimeUnixNano", 0)),
                            end_ns=int(s.get("endTimeUnixNano", 0)),
                            attributes=attrs,
                            service=service,
                            error=int(s.get("status", {}).get("code", 0)) == 2,
                            received_ns=received,
                            via=via,
                        )
                    )
    return spans


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON-lines records in ``path`` (none if it does not exist)."""
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)


@dataclass
class Run:
    folder: Path
    spans: list[Span] = field(default_factory=list)
    invocations: list[dict[str, Any]] = field(default_factory=list)
    environments: list[dict[str, Any]] = field(default_factory=list)
    client: list[dict[str, Any]] = field(default_factory=list)
    #: What ``dsqltrace load`` said of the run (``load.json``).
    load_summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> Run:
        run = cls(folder, spans=read_spans(folder / SPANS_FILE))
        for record in read_records(folder / INVOCATIONS_FILE):
            if record.get("record") == "environment":
                run.environments.append(record)
            elif record.get("record") == "invocation":
                run.invocations.append(record)
        run.client = list(read_records(folder / CLIENT_FILE))
        if (folder / LOAD_FILE).exists():
            run.load_summary = json.loads((folder / LOAD_FILE).read_text(encoding="utf-8"))
        return run
