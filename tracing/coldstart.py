"""Cold start: what init did, recorded with its real timestamps, replayed under ``aws.lambda.init``.

Work done while the handler module is imported (credential loading, token
generation, connection setup, anything wrapped in :func:`tracing.traced`)
happens before any trace exists: the first request's trace id comes with the
first event.  So during init :func:`tracing.traced` records *phases* (name,
attributes, start and end) instead of spans, and the first invocation replays
them as back-dated spans under an ``aws.lambda.init`` span, which itself starts
when the process started.  After the first invocation the recorder is off and
the same code makes ordinary child spans.

The first invocation is a cold start unless the environment was initialised
ahead of time: provisioned concurrency (``AWS_LAMBDA_INITIALIZATION_TYPE``) or
proactive initialisation (more than 10 s between the end of init and the first
invocation).  The init phases are then emitted as a trace of their own.

With SnapStart (:mod:`tracing.snapstart`) init runs once, before the snapshot:
its phases go out then, as a trace of their own (:func:`snapshot`).  A restore
starts a new record (:func:`restore_began`): the after-restore hooks and what
they do are recorded the same way, and the first invocation of the restored
environment, a cold start, replays them under ``aws.lambda.snapstart_restore``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types

from tracing import names

__all__ = [
    "MAX_PHASES",
    "PROACTIVE_INIT_THRESHOLD_NS",
    "FirstInvocation",
    "RecordedSpan",
    "begin_invocation",
    "configure",
    "current_phase",
    "end_phase",
    "mark_ready",
    "pending_phases",
    "recording",
    "replay",
    "reset",
    "restore_began",
    "snapshot",
    "start_phase",
]

#: A first invocation later than this after init is a proactive initialisation.
PROACTIVE_INIT_THRESHOLD_NS = 10_000_000_000
#: Recording stops after this many phases (a runaway loop at import time).
MAX_PHASES = 256


def _process_start_ns() -> int:
    """Wall-clock time this process started (10 ms resolution), or now if unknown."""
    now = time.time_ns()
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime, clock ticks since boot) counted after the ")" of comm.
        start_ticks = int(stat.rsplit(b")", 1)[1].split()[19])
        ticks = os.sysconf("SC_CLK_TCK")
        since_boot_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        start = now - (since_boot_ns - start_ticks * 1_000_000_000 // ticks)
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return start if 0 < now - start < 3_600_000_000_000 else now


class RecordedSpan(trace.Span):
    """A span-like record of one init phase; replayed later as a real span."""

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, types.AttributeValue] | None,
        parent: RecordedSpan | None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.attributes: dict[str, types.AttributeValue] = dict(attributes or {})
        self.parent = parent
        self.events: list[tuple[str, dict[str, types.AttributeValue], int]] = []
        self.status = Status(StatusCode.UNSET)
        self.start_ns = time.time_ns()
        self.end_ns: int | None = None

    def end(self, end_time: int | None = None) -> None:
        if self.end_ns is None:
            self.end_ns = end_time or time.time_ns()

    def get_span_context(self) -> SpanContext:
        return trace.INVALID_SPAN_CONTEXT

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        self.attributes[key] = value

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        self.events.append((name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        pass

    def update_name(self, name: str) -> None:
        self.name = name

    def is_recording(self) -> bool:
        return self.end_ns is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, StatusCode):
            status = Status(status, description)
        self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        try:
            message = str(exception)
        except Exception:
            message = "<message unavailable>"
        attrs: dict[str, types.AttributeValue] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": message,
            **dict(attributes or {}),
        }
        self.add_event("exception", attrs, timestamp)


class _ColdStartState:
    """What the environment's init recorded (a plain class: a dataclass costs a cold
    start about a millisecond to build)."""

    __slots__ = (
        "clock",
        "enabled",
        "invoked",
        "phases",
        "process_start_ns",
        "ready_ns",
        "restored",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], int] = time.time_ns,
        process_start_ns: int | None = None,
        enabled: bool = True,
        restored: bool = False,
    ) -> None:
        self.clock = clock
        self.process_start_ns = (
            _process_start_ns() if process_start_ns is None else process_start_ns
        )
        self.enabled = enabled
        self.invoked = False
        self.ready_ns = 0
        self.phases: list[RecordedSpan] = []
        #: True once restored from a SnapStart snapshot: the record is the restore's.
        self.restored = restored


_state = _ColdStartState()
_current: ContextVar[RecordedSpan | None] = ContextVar("tracing_init_phase", default=None)


def reset(*, clock: Callable[[], int] = time.time_ns) -> None:
    """Forget everything recorded, as in a fresh execution environment.

    ``clock`` (wall-clock nanoseconds) is what decides a proactive initialisation;
    tests pass one that runs ahead.
    """
    global _state
    _state = _ColdStartState(clock=clock)
    _current.set(None)


def configure(*, enabled: bool) -> None:
    """Turn phase recording on or off (``DSQLTRACE_COLDSTART_PHASES``)."""
    _state.enabled = enabled
    if not enabled:
        _state.phases.clear()


def recording() -> bool:
    """True while init work should be recorded rather than traced."""
    s = _state
    return (
        not s.invoked
        and s.enabled
        and len(s.phases) < MAX_PHASES
        and "AWS_LAMBDA_FUNCTION_NAME" in os.environ
    )


def current_phase() -> RecordedSpan | None:
    """The init phase open now, while init is being recorded."""
    phase = _current.get()
    return phase if phase is not None and recording() else None


def start_phase(
    name: str, kind: SpanKind, attributes: Mapping[str, types.AttributeValue] | None
) -> tuple[RecordedSpan, object]:
    """Open a phase as the child of the current one; returns it and a reset token."""
    phase = RecordedSpan(name, kind, attributes, _current.get())
    _state.phases.append(phase)
    return phase, _current.set(phase)


def end_phase(phase: RecordedSpan, token: object) -> None:
    """Close a phase and make its parent current again."""
    phase.end()
    _current.reset(token)  # type: ignore[arg-type]


def mark_ready() -> None:
    """Note that the handler module has loaded (the end of init, at the latest)."""
    _state.ready_ns = _state.clock()


class FirstInvocation:
    """What the first invocation of an environment learns about its init."""

    __slots__ = ("coldstart", "initialization_type", "proactive")

    def __init__(self, coldstart: bool, proactive: bool, initialization_type: str) -> None:
        self.coldstart = coldstart
        self.proactive = proactive
        self.initialization_type = initialization_type


def begin_invocation() -> FirstInvocation | None:
    """Called when an invocation starts: the answer for the first one, None afterwards."""
    s = _state
    if s.invoked:
        return None
    s.invoked = True
    if s.restored:  # a restore serves the invocation that asked for it: a cold start
        return FirstInvocation(coldstart=True, proactive=False, initialization_type="snap-start")
    init_type = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
    proactive = s.clock() - _init_end_ns() > PROACTIVE_INIT_THRESHOLD_NS
    return FirstInvocation(
        coldstart=init_type == "on-demand" and not proactive,
        proactive=proactive,
        initialization_type=init_type,
    )


def _init_end_ns() -> int:
    s = _state
    ends = [p.end_ns for p in s.phases if p.end_ns is not None]
    return max([s.ready_ns, s.process_start_ns, *ends])


def snapshot(tracer: trace.Tracer, function_name: str) -> int:
    """Emit init's phases as a trace of their own, marked ``snap-start`` (before a
    SnapStart snapshot: they happened once, not in each restored environment)."""
    return replay(tracer, None, function_name, initialization_type="snap-start")


def restore_began(start_ns: int | None = None) -> None:
    """Start the record of a SnapStart restore (the first after-restore hook calls it)."""
    global _state
    old = _state
    _state = _ColdStartState(
        clock=old.clock,
        process_start_ns=start_ns or old.clock(),
        enabled=old.enabled,
        restored=True,
    )
    _current.set(None)


def replay(
    tracer: trace.Tracer,
    parent: trace.Span | None,
    function_name: str,
    *,
    initialization_type: str | None = None,
) -> int:
    """Emit the init span (the restore span after a SnapStart restore) and its recorded
    phases; returns how many spans were made.

    With ``parent`` (a cold start) they join the invocation's trace; without it
    they form a trace of their own.  The record is cleared: nothing is emitted twice.
    """
    s = _state
    root = names.LAMBDA_SNAPSTART_RESTORE if s.restored else names.LAMBDA_INIT
    phases = [p for p in s.phases if p.end_ns is not None]
    end = _init_end_ns()
    s.phases = []
    start = min([s.process_start_ns, *(p.start_ns for p in phases)])
    # Without a parent: an empty context, so that the init span roots a trace of its own.
    ctx = trace.set_span_in_context(parent) if parent is not None else Context()
    root_attributes: dict[str, types.AttributeValue] = {
        names.DD_OPERATION_NAME: root,
        names.DD_RESOURCE_NAME: function_name,
    }
    if initialization_type is not None:
        root_attributes[names.INIT_TYPE] = initialization_type
    init_span = tracer.start_span(
        root, context=ctx, kind=SpanKind.INTERNAL, attributes=root_attributes, start_time=start
    )
    made: dict[int, trace.Span] = {}
    for phase in phases:
        parent_span = made.get(id(phase.parent)) if phase.parent is not None else None
        attributes = dict(phase.attributes)
        attributes[names.INIT_PHASE] = True
        span = tracer.start_span(
            phase.name,
            context=trace.set_span_in_context(parent_span or init_span),
            kind=phase.kind,
            attributes=attributes,
            start_time=phase.start_ns,
        )
        for event_name, event_attrs, ts in phase.events:
            span.add_event(event_name, event_attrs, ts)
        if phase.status.status_code is not StatusCode.UNSET:
            span.set_status(phase.status)
        span.end(end_time=phase.end_ns)
        made[id(phase)] = span
    init_span.end(end_time=end)
    return len(phases) + 1


def pending_phases() -> Sequence[RecordedSpan]:
    """The phases recorded so far (for tests and diagnostics)."""
    return tuple(_state.phases)
