"""The lean provider (``tracing.tracer``) against the OpenTelemetry SDK's, scenario by scenario.

Each scenario runs once on the SDK's ``TracerProvider`` and once on the
toolkit's; what each exports is reduced to the same plain form (names,
parents, attributes, drop counts, events, links, status, flags, trace
state, scope, resource) and must be equal.  Ids and times differ by nature
and are compared by shape.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from tracing import otlp
from tracing.tracer import Resource, SpanLimits, TracerProvider
from tracing.tracer import _ids as lean_ids

RESOURCE = {"service.name": "compare", "cloud.provider": "aws", "list": ["a", "b"]}
LIMIT_VARS = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
)
SAMPLERS = {
    "always_on": sampling.ALWAYS_ON,
    "always_off": sampling.ALWAYS_OFF,
    "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
}


class _Memory:
    """The lean provider's in-memory processor."""

    uses_on_start = False

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        pass

    def on_end(self, span: Any) -> None:
        self.spans.append(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


Scenario = Callable[[trace.Tracer], None]


def run_sdk(scenario: Scenario, sampler: str = "parentbased_always_on", ratio: float = 1.0):
    root = SAMPLERS.get(sampler)
    if root is None:
        root = sampling.TraceIdRatioBased(ratio)
        if sampler.startswith("parentbased_"):
            root = sampling.ParentBased(root)
    provider = SdkTracerProvider(
        resource=SdkResource(RESOURCE), sampler=root, shutdown_on_exit=False
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    scenario(provider.get_tracer("scope", "1.2", "https://schema/1", {"scope.attr": 1}))
    return list(memory.get_finished_spans())


def run_lean(scenario: Scenario, sampler: str = "parentbased_always_on", ratio: float = 1.0):
    provider = TracerProvider(resource=Resource(RESOURCE), sampler=sampler, sampler_ratio=ratio)
    memory = _Memory()
    provider.add_span_processor(memory)
    scenario(provider.get_tracer("scope", "1.2", "https://schema/1", {"scope.attr": 1}))
    return memory.spans


def plain(spans: list[Any]) -> list[dict[str, Any]]:
    """What an exporter sees of each span, with ids replaced by their position."""
    ids = {s.context.span_id: i for i, s in enumerate(spans)}
    out = []
    for s in spans:
        status = s.status
        out.append(
            {
                "name": s.name,
                "kind": s.kind,
                "parent": None
                if s.parent is None
                else ids.get(s.parent.span_id, ("remote", s.parent.is_remote)),
                "same_trace_as_parent": s.parent is None or s.parent.trace_id == s.context.trace_id,
                "flags": int(s.context.trace_flags),
                "trace_state": s.context.trace_state.to_header(),
                "attributes": dict(s.attributes),
                "attribute_order": list(s.attributes),
                "dropped_attributes": s.dropped_attributes,
                "events": [
                    (
                        e.name,
                        {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"},
                        e.dropped_attributes,
                        "exception.stacktrace" in e.attributes,
                    )
                    for e in s.events
                ],
                "dropped_events": s.dropped_events,
                "links": [
                    (k.context.span_id, dict(k.attributes), k.dropped_attributes) for k in s.links
                ],
                "dropped_links": s.dropped_links,
                "status": (status.status_code, status.description),
                "resource": dict(s.resource.attributes),
                "scope": (
                    s.instrumentation_scope.name,
                    s.instrumentation_scope.version,
                    s.instrumentation_scope.schema_url,
                    dict(s.instrumentation_scope.attributes or {}),
                ),
                "timed": s.start_time <= s.end_time,
                "valid": s.context.is_valid and not s.context.is_remote,
            }
        )
    return out


def same(scenario: Scenario, **sampler: Any) -> list[dict[str, Any]]:
    sdk, lean = plain(run_sdk(scenario, **sampler)), plain(run_lean(scenario, **sampler))
    assert lean == sdk
    return lean


@pytest.fixture(autouse=True)
def _no_limits_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in LIMIT_VARS:
        monkeypatch.delenv(var, raising=False)


REMOTE_SAMPLED = SpanContext(
    0x1234, 0x99, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])
)
REMOTE_NOT_SAMPLED = SpanContext(0x1234, 0x98, is_remote=True, trace_flags=TraceFlags(0))


def nested(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1}):
        with tracer.start_as_current_span("child") as child:
            child.set_attribute("b", "two")
        tracer.start_span("sibling", start_time=5, attributes={"c": 2.5}).end(end_time=10)


def test_parents_kinds_flags_scope_and_resource() -> None:
    spans = same(nested)
    assert [s["parent"] for s in spans] == [2, 2, None]
    assert spans[2]["flags"] == TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID


def test_attribute_count_limit_drops_the_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "3")

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x", attributes={"a": 1, "b": 2, "c": 3, "d": 4})
        span.set_attribute("b", 20)  # an update moves the key last
        span.set_attribute("e", 5)
        span.set_attributes({"f": 6, "": 7})
        span.end()

    (span,) = same(scenario)
    assert span["attribute_order"] == ["b", "e", "f"]
    assert span["dropped_attributes"] == 4


def test_no_attributes_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_COUNT_LIMIT", "0")

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x", attributes={"a": 1})
        span.set_attribute("b", 2)
        span.add_event("e", {"k": 1})
        span.end()

    (span,) = same(scenario)
    assert span["attributes"] == {}
    assert span["dropped_attributes"] == 2


def test_value_length_and_cleaning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")

    class Named:
        def __str__(self) -> str:
            return "named-object"

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span(
            "x",
            attributes={
                "long": "abcdefgh",
                "short": "abc",
                "list": ["abcdefgh", "x"],
                "mixed": [1, "two", None],
                "none": None,
                "bytes": b"\x00\x01",
                "map": {"inner": "abcdefgh"},
                "object": Named(),
                7: "seven",  # type: ignore[dict-item]
                "": "empty key",
            },
        )
        span.set_attribute("later", "abcdefgh")
        span.set_attribute("later_list", ("abcdefgh",))
        span.set_attribute("later_object", Named())  # type: ignore[arg-type]
        span.set_attribute("", "dropped")
        span.set_attribute(8, "dropped")  # type: ignore[arg-type]
        span.add_event("event", {"long": "abcdefgh"})
        span.end()

    (span,) = same(scenario)
    assert span["attributes"]["long"] == "abcd"
    assert span["attributes"]["list"] == ("abcd", "x")


def test_span_only_length_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "2")

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x", attributes={"s": "abc"})
        span.add_event("event", {"s": "abc"})  # events keep the general limit (none)
        span.end()

    (span,) = same(scenario)
    assert span["attributes"] == {"s": "ab"}
    assert span["events"][0][1] == {"s": "abc"}


def test_events_links_and_their_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "1")
    monkeypatch.setenv("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "1")
    linked = [SpanContext(0x77, i, is_remote=True) for i in range(1, 4)]

    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span(
            "x",
            links=[
                Link(linked[0], {"n": 0, "m": 1}),
                Link(trace.INVALID_SPAN_CONTEXT),  # invalid, no attributes: left out
                Link(trace.INVALID_SPAN_CONTEXT, {"why": "kept"}),
                Link(linked[1]),
            ],
        )
        span.add_link(linked[2], {"late": True})
        span.add_link(trace.INVALID_SPAN_CONTEXT)
        for i in range(3):
            span.add_event(f"e{i}", {"i": i, "j": i}, timestamp=100 + i)
        span.end()

    (span,) = same(scenario)
    assert [e[0] for e in span["events"]] == ["e1", "e2"]
    assert span["dropped_events"] == 1
    assert span["dropped_links"] == 2


def test_status_rules() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        a = tracer.start_span("unset ignored")
        a.set_status(StatusCode.ERROR, "broken")
        a.set_status(StatusCode.UNSET)
        a.end()
        b = tracer.start_span("ok is final")
        b.set_status(Status(StatusCode.OK))
        b.set_status(StatusCode.ERROR, "too late")
        b.end()
        c = tracer.start_span("status object and description")
        c.set_status(Status(StatusCode.ERROR, "from status"), "ignored")
        c.end()

    spans = same(scenario)
    assert [s["status"] for s in spans] == [
        (StatusCode.ERROR, "broken"),
        (StatusCode.OK, None),
        (StatusCode.ERROR, "from status"),
    ]


def test_an_ended_span_changes_no_more() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("x", attributes={"a": 1})
        span.end()
        span.set_attribute("b", 2)
        span.set_attributes({"c": 3})
        span.add_event("late")
        span.add_link(SpanContext(0x5, 0x6, is_remote=False))
        span.set_status(StatusCode.ERROR)
        span.update_name("renamed")
        span.end()  # ends once: exported once
        assert not span.is_recording()

    (span,) = same(scenario)
    assert span["name"] == "x" and span["attributes"] == {"a": 1}


def test_exceptions_as_the_sdk_records_them() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        with pytest.raises(KeyError), tracer.start_as_current_span("current"):
            raise KeyError("missing")
        with pytest.raises(ValueError), tracer.start_span("plain") as span:
            span.set_attribute("x", 1)
            raise ValueError("bad")
        quiet = tracer.start_span("quiet", record_exception=False, set_status_on_exception=False)
        with pytest.raises(RuntimeError), quiet:
            raise RuntimeError("not recorded")
        other = tracer.start_span("manual")
        other.record_exception(OSError(2, "gone"), {"extra": "yes"}, timestamp=42, escaped=True)
        other.end()

    spans = same(scenario)
    assert spans[0]["events"][0][1]["exception.type"] == "KeyError"
    assert spans[1]["status"] == (StatusCode.ERROR, "ValueError: bad")
    assert spans[2]["events"] == [] and spans[2]["status"][0] is StatusCode.UNSET


@pytest.mark.parametrize("sampler", [*SAMPLERS, "traceidratio", "parentbased_traceidratio"])
def test_sampling_and_parents(sampler: str) -> None:
    def scenario(tracer: trace.Tracer) -> None:
        random.seed(1)  # each run draws its own ids, never those of the run before
        lean_ids.seed(1)
        for parent in (REMOTE_SAMPLED, REMOTE_NOT_SAMPLED):
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent))
            span = tracer.start_span("under remote", context=ctx)
            with trace.use_span(span, end_on_exit=True):
                tracer.start_span("local child").end()
        random.seed(7)  # the same root trace ids on both sides (the SDK's generator)
        lean_ids.seed(7)  # (the lean provider's: the same Mersenne Twister)
        for _ in range(40):
            tracer.start_span("root", context=otel_context.Context()).end()

    spans = same(scenario, sampler=sampler, ratio=0.5)
    under_remote = [s for s in spans if s["parent"] == ("remote", True)]
    if sampler != "always_off":  # the sampled remote parent's child, with its trace state
        assert "k=v" in {s["trace_state"] for s in under_remote}
    for span in under_remote:  # the remote parents had no RANDOM_TRACE_ID flag
        assert span["flags"] == TraceFlags.SAMPLED
    roots = [s for s in spans if s["name"] == "root"]
    assert len(roots) == {"always_on": 40, "parentbased_always_on": 40}.get(sampler, len(roots))
    if "ratio" in sampler:
        assert 5 < len(roots) < 35  # some sampled, some not: the decisions were compared


def test_ratio_decisions_match_the_sdk_for_many_trace_ids() -> None:
    from tracing.tracer import _Sampling

    rng = random.Random(3)
    for ratio in (0.0, 0.001, 0.25, 0.5, 0.999, 1.0):
        ours = _Sampling("traceidratio", ratio)
        theirs = sampling.TraceIdRatioBased(ratio)
        for _ in range(2000):
            trace_id = rng.getrandbits(128)
            expected = theirs.should_sample(None, trace_id, "x").decision.is_sampled()
            assert ours.sampled(None, trace_id) is expected


def test_a_dropped_span_still_carries_its_context() -> None:
    memory = _Memory()
    provider = TracerProvider(resource=Resource({}), sampler="always_off")
    provider.add_span_processor(memory)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("off") as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid
        child = tracer.start_span("child")
        assert child.get_span_context().trace_id == span.get_span_context().trace_id
        child.end()
    assert memory.spans == []


def test_limits_read_the_sdks_variables_and_warn_on_a_bad_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import SpanLimits as SdkLimits

    monkeypatch.setenv("OTEL_ATTRIBUTE_COUNT_LIMIT", "9")
    monkeypatch.setenv("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", "")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "30")
    ours, theirs = SpanLimits.from_environ(), SdkLimits()
    for field in (
        "max_span_attributes",
        "max_events",
        "max_links",
        "max_event_attributes",
        "max_link_attributes",
        "max_attribute_length",
        "max_span_attribute_length",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "-3")
    assert SpanLimits.from_environ().max_events == 128
    assert "OTEL_SPAN_EVENT_COUNT_LIMIT must be a non-negative integer" in caplog.text


def test_lean_spans_encode_as_sdk_spans_do() -> None:
    """The OTLP encoder writes the same bytes for both, ids and times aside."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    def scenario(tracer: trace.Tracer) -> None:
        nested(tracer)
        span = tracer.start_span("rich", kind=SpanKind.CLIENT, links=[Link(REMOTE_SAMPLED)])
        span.record_exception(ValueError("x"), timestamp=1)
        span.set_status(StatusCode.ERROR, "why")
        span.end(end_time=span.start_time + 5)  # type: ignore[attr-defined]

    def decoded(spans: list[Any]) -> Any:
        request = ExportTraceServiceRequest.FromString(otlp.encode_request(spans))
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    s.trace_id = s.span_id = s.parent_span_id = b""
                    s.start_time_unix_nano = s.end_time_unix_nano = 0
                    for event in s.events:
                        for kv in event.attributes:
                            if kv.key == "exception.stacktrace":
                                kv.value.string_value = ""
        return request

    assert decoded(run_lean(scenario)) == decoded(run_sdk(scenario))


def test_to_json_is_the_sdks() -> None:
    (span,) = run_lean(lambda t: t.start_span("x", attributes={"a": 1}).end())
    text = span.to_json(indent=None)
    assert '"name": "x"' in text and '"a": 1' in text and '"service.name": "compare"' in text


def test_a_full_span_warns_once_and_every_processor_is_flushed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
    (span,) = run_lean(lambda t: t.start_span("x", attributes={str(i): i for i in range(50)}).end())
    assert span.dropped_attributes == 48
    assert caplog.text.count("Attributes dict is full") == 1

    class Failing(_Memory):
        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return False

    flushed: list[int] = []

    class Counting(_Memory):
        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            flushed.append(timeout_millis)
            return True

    provider = TracerProvider(resource=Resource({}))
    provider.add_span_processor(Failing())
    provider.add_span_processor(Counting())
    assert provider.force_flush(5) is False
    assert flushed == [5]  # the second was flushed although the first failed
