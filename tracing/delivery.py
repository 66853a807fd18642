"""When spans are delivered: inline, after the response, or periodically.

``DSQLTRACE_DELIVERY`` picks the mode:

- ``after-response`` (the default in Lambda): :func:`tracing.setup_tracing`
  registers an internal extension (:mod:`tracing.extension`) during init.
  Its thread receives each ``INVOKE`` event, waits until the wrapped handler
  has ended the invocation's span, delivers the spans within the flush
  timeout, then calls ``next``.  The caller has its response by then: the
  delivery counts in the billed duration, not in the caller's latency.  The
  same thread watches the invocation's deadline (``deadlineMs`` of the
  event), so no thread of its own wakes per invocation.
- ``inline``: the handler delivers before it returns (the fallback outside
  Lambda, and when registration fails; one warning).
- ``periodic,<ms>``: as ``after-response`` (or inline outside Lambda), but a
  delivery happens only when ``<ms>`` have passed since the last one or a
  batch is full: one export for many invocations of a busy function.  Spans
  wait in memory between them, frozen with the environment; SIGTERM delivers
  what is left.

With an extension registered Lambda sends SIGTERM before it stops the
environment; the toolkit then delivers what is pending within about 400 ms
and lets the runtime stop (runtimes 3.12+; awslambdaric 3.11 does not pass
SIGTERM to Python while it waits for the next invocation).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from tracing.runtime import NAME, logger

if TYPE_CHECKING:
    from tracing.extension import ExtensionClient, InvokeEvent
    from tracing.runtime import Delivery

__all__ = [
    "REGISTER_TIMEOUT_S",
    "SHUTDOWN_BUDGET_S",
    "START_WAIT_S",
    "AfterResponse",
    "DeliveryMode",
    "Inline",
    "choose",
]

#: The most registration may hold init.
REGISTER_TIMEOUT_S = 0.05
#: How long the extension waits for a wrapped handler to start the invocation it was
#: told of; past it the invocation is taken to be one without a root span.
START_WAIT_S = 1.0
#: What delivery may take once SIGTERM came (Lambda kills ~500 ms after it).
SHUTDOWN_BUDGET_S = 0.4

#: Ends an invocation's span at its impending timeout.
Expire = Callable[[], None]


class DeliveryMode(Protocol):
    """What the handler wrapper tells the delivery about each invocation."""

    name: str

    @property
    def watches_deadline(self) -> bool:
        """True when the mode ends the span at an impending timeout itself."""
        ...

    def started(self, request_id: str | None, expire: Expire) -> None:
        """An invocation began; ``expire`` ends its span at an impending timeout."""
        ...

    def ended(self, request_id: str | None) -> None:
        """The invocation's span has ended: its spans may go."""
        ...

    def close(self) -> None:
        """Stop; deliver nothing more."""
        ...


class _Pace:
    """Whether a delivery is due: always, or once per interval (or when a batch is full)."""

    def __init__(self, delivery: Delivery, interval_s: float | None) -> None:
        self._delivery = delivery
        self._interval = interval_s
        self._last = time.monotonic()

    def deliver(self) -> None:
        if self._interval is not None:
            pending = getattr(self._delivery, "pending", None)
            full = pending is not None and pending() >= _batch_spans()
            if not full and time.monotonic() - self._last < self._interval:
                return
        self._last = time.monotonic()
        self._delivery.flush()


def _batch_spans() -> int:
    from tracing.export import MAX_BATCH_SPANS

    return MAX_BATCH_SPANS


class Inline:
    """Delivery before the handler returns (or, periodic, when due)."""

    name = "inline"
    watches_deadline = False

    def __init__(self, delivery: Delivery, *, interval_s: float | None = None) -> None:
        self._pace = _Pace(delivery, interval_s)
        if interval_s is not None:
            self.name = "periodic"

    def started(self, request_id: str | None, expire: Expire) -> None:
        pass

    def ended(self, request_id: str | None) -> None:
        self._pace.deliver()

    def close(self) -> None:
        pass


class AfterResponse:
    """Delivery by the internal extension's thread, after the response, before the freeze."""

    name = "after-response"

    def __init__(
        self,
        delivery: Delivery,
        client: ExtensionClient,
        *,
        margin_s: float,
        interval_s: float | None = None,
        wrapped: Callable[[], bool],
    ) -> None:
        self._delivery = delivery
        self._client = client
        self._margin = margin_s
        self._pace = _Pace(delivery, interval_s)
        self._wrapped = wrapped
        self._cond = threading.Condition()
        self._started: dict[str, Expire] = {}
        self._ended: set[str] = set()
        self._closed = False
        self._fallback: Inline | None = None
        if interval_s is not None:
            self.name = "periodic"
        self._thread = threading.Thread(target=self._run, name=f"{NAME}-extension", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the extension thread has stopped (delivery is inline from then on)."""
        return self._fallback is None

    @property
    def watches_deadline(self) -> bool:
        return self._fallback is None

    def started(self, request_id: str | None, expire: Expire) -> None:
        if self._fallback is not None or request_id is None:
            return
        with self._cond:
            self._started[request_id] = expire
            self._cond.notify_all()

    def ended(self, request_id: str | None) -> None:
        fallback = self._fallback
        if fallback is not None or request_id is None:
            (fallback or Inline(self._delivery)).ended(request_id)
            return
        with self._cond:
            self._ended.add(request_id)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            while not self._closed:
                event = self._client.next_event()
                if event is not None:
                    self._handle(event)
        except BaseException as exc:
            if not self._closed:
                self._fallback = Inline(self._delivery)
                logger.warning(
                    "tracing: the delivery extension stopped (%s); delivering inline from now on",
                    exc,
                )

    def _handle(self, event: InvokeEvent) -> None:
        rid = event.request_id
        deadline = event.deadline()
        cond = self._cond
        with cond:
            if self._wrapped():
                cond.wait_for(
                    lambda: rid in self._started or rid in self._ended,
                    max(0.0, min(START_WAIT_S, deadline - time.monotonic())),
                )
            expire = self._started.get(rid)
            if expire is not None and rid not in self._ended:
                expire_at = deadline - self._margin
                ended = cond.wait_for(
                    lambda: rid in self._ended, max(0.0, expire_at - time.monotonic())
                )
                if not ended and self._margin > 0:
                    cond.release()
                    try:
                        expire()
                        self._delivery.flush(self._margin * 0.8)
                    finally:
                        cond.acquire()
                    cond.wait_for(lambda: rid in self._ended, max(0.0, deadline - time.monotonic()))
            self._started.clear()
            self._ended.clear()
        try:
            self._pace.deliver()
        except Exception as exc:
            logger.warning("tracing: delivery after the response failed: %s", exc)

    def close(self) -> None:
        self._closed = True
        self._client.close()


def install_sigterm(delivery: Delivery) -> bool:
    """On SIGTERM, deliver what is pending within :data:`SHUTDOWN_BUDGET_S`, then let the
    previous handler (or the default action) stop the process.  Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return False
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        try:
            delivery.flush(SHUTDOWN_BUDGET_S)
        except Exception as exc:
            logger.warning("tracing: delivery at shutdown failed: %s", exc)
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    return True


def choose(
    setting: str,
    delivery: Delivery,
    *,
    margin_s: float,
    wrapped: Callable[[], bool],
    environ: Any = None,
) -> DeliveryMode:
    """The mode ``DSQLTRACE_DELIVERY`` asks for, falling back to inline (one warning)."""
    env = os.environ if environ is None else environ
    kind, _, interval = setting.partition(",")
    interval_s = int(interval) / 1000.0 if kind == "periodic" else None
    api = env.get("AWS_LAMBDA_RUNTIME_API")
    wants_extension = kind in ("after-response", "periodic") or (kind == "auto" and api)
    if not wants_extension:
        return Inline(delivery)
    if not api:
        if kind != "auto":
            logger.info("tracing: not in Lambda (no AWS_LAMBDA_RUNTIME_API); delivering inline")
        return Inline(delivery, interval_s=interval_s)
    from tracing.extension import ExtensionClient, ExtensionError

    try:
        client = ExtensionClient(api)
        client.register(NAME, timeout=REGISTER_TIMEOUT_S)
    except (ExtensionError, OSError) as exc:
        logger.warning(
            "tracing: could not register the delivery extension (%s); delivering inline", exc
        )
        return Inline(delivery, interval_s=interval_s)
    mode = AfterResponse(
        delivery, client, margin_s=margin_s, interval_s=interval_s, wrapped=wrapped
    )
    install_sigterm(delivery)
    return mode
