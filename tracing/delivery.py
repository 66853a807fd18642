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

- ``background`` (chosen by itself on Lambda Managed Instances, where
  ``AWS_LAMBDA_MAX_CONCURRENCY`` is set, whatever the setting but ``inline``):
  one environment serves concurrent invocations from one process per slot,
  nothing freezes, and the Extensions API has no ``INVOKE`` events.  So no
  extension is registered: a thread of the process delivers every interval
  (``periodic,<ms>``'s, else :data:`BACKGROUND_INTERVAL_S`) or as soon as a
  batch is full, and SIGTERM delivers what is left.  Each worker process sets
  up its own tracing, cold start and connection, as it runs its own init.

With an extension registered Lambda sends SIGTERM before it stops the
environment; the toolkit then delivers what is pending within about 400 ms
and lets the runtime stop (runtimes 3.12+; awslambdaric 3.11 does not pass
SIGTERM to Python while it waits for the next invocation).
"""

from __future__ import annotations

import _signal
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from tracing.runtime import NAME, logger

if TYPE_CHECKING:
    from types import FrameType

    from tracing.extension import ExtensionClient, InvokeEvent
    from tracing.runtime import Delivery

__all__ = [
    "BACKGROUND_INTERVAL_S",
    "EVENT_WAIT_S",
    "POST_WAIT_S",
    "REGISTER_TIMEOUT_S",
    "SHUTDOWN_BUDGET_S",
    "START_WAIT_S",
    "AfterResponse",
    "Background",
    "DeliveryMode",
    "Inline",
    "Registration",
    "choose",
    "start_registration",
]

#: How often background delivery (Lambda Managed Instances) sends what is pending.
BACKGROUND_INTERVAL_S = 1.0
#: The most registration may hold init.
REGISTER_TIMEOUT_S = 0.05
#: How long the extension waits for a wrapped handler to start the invocation it was
#: told of; past it the invocation is taken to be one without a root span.
START_WAIT_S = 1.0
#: What delivery may take once SIGTERM came (Lambda kills ~500 ms after it).
SHUTDOWN_BUDGET_S = 0.4
#: The most delivery waits, after the span's end, for the runtime to post the response.
POST_WAIT_S = 0.1
#: The most delivery driven by the runtime waits for the invocation's event, once the
#: response is out (Lambda sent it when the invocation began: it is there already, but a
#: starved machine may take its time, and giving up leaves Lambda waiting for ``next``).
EVENT_WAIT_S = 10.0

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
        from tracing.export import MAX_BATCH_SPANS  # once, not per invocation

        self._batch = MAX_BATCH_SPANS
        self._delivery = delivery
        self._interval = interval_s
        self._last = time.monotonic()

    def deliver(self) -> None:
        if self._interval is not None:
            pending = getattr(self._delivery, "pending", None)
            full = pending is not None and pending() >= self._batch
            if not full and time.monotonic() - self._last < self._interval:
                return
        self._last = time.monotonic()
        self._delivery.flush()


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
        _explain_pending(None)
        self._pace.deliver()

    def close(self) -> None:
        pass


def _explain_pending(deadline: float | None) -> None:
    """Run the explains the invocation queued (:mod:`tracing.explain`), before delivery."""
    module = sys.modules.get("tracing.explain")
    if module is not None and module.pending():
        module.run_pending(deadline)


class Background:
    """Delivery from a thread of the process, every interval or when a batch is full
    (Lambda Managed Instances: no freeze, no ``INVOKE`` events)."""

    name = "background"
    watches_deadline = False

    def __init__(self, delivery: Delivery, *, interval_s: float = BACKGROUND_INTERVAL_S) -> None:
        from tracing.export import MAX_BATCH_SPANS

        self._delivery = delivery
        self._interval = interval_s
        self._batch = MAX_BATCH_SPANS
        self._pending: Callable[[], int] | None = getattr(delivery, "pending", None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.on_close: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{NAME}-background", daemon=True)
        self._thread.start()

    def started(self, request_id: str | None, expire: Expire) -> None:
        pass

    def ended(self, request_id: str | None) -> None:
        _explain_pending(None)
        if self._pending is not None and self._pending() >= self._batch:
            self._wake.set()  # a full batch goes now, not at the end of the interval

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._delivery.flush()
            except Exception as exc:  # the thread must outlive any failure
                logger.warning("tracing: background delivery failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


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
        self._posted: set[str] = set()
        #: True when the runtime tells us it has posted each response (see _hook_runtime).
        self._hooked = _hook_runtime(self._response_posted)
        self._closed = False
        self._fallback: Inline | None = None
        #: Undoes what was installed with the mode (the SIGTERM delivery).
        self.on_close: Callable[[], None] | None = None
        if interval_s is not None:
            self.name = "periodic"
        #: Driven by the runtime: awslambdaric runs this process and says when each
        #: response is out, so its thread delivers then, reads the extension's event and
        #: calls the extension's ``next`` before it calls its own.  No thread of ours
        #: wakes during an invocation (an extension thread would, at each ``INVOKE``,
        #: and take the GIL from the handler).
        self.driven = self._hooked and _under_awslambdaric()
        self._thread: threading.Thread | None = None
        if self.driven:
            client.send_next()  # ready for the first invocation
        else:
            self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"{NAME}-extension", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the extension has stopped (delivery is inline from then on, or, driven
        by the runtime, still after the response but without the extension)."""
        return self._fallback is None

    @property
    def watches_deadline(self) -> bool:
        return self._fallback is None and not self.driven

    def _lost(self, exc: BaseException) -> None:
        self._fallback = Inline(self._delivery)
        # Driven by the runtime, delivery goes on after each response, without `next`.
        then = "after each response, without it" if self.driven else "inline from now on"
        logger.warning("tracing: the delivery extension stopped (%s); delivering %s", exc, then)

    def started(self, request_id: str | None, expire: Expire) -> None:
        if self.driven or self._fallback is not None or request_id is None:
            return
        # No notify: waking the extension's thread now would take the GIL from the
        # handler.  It wakes when the response is posted (or the span ends), or after
        # START_WAIT_S to find this entry.
        with self._cond:
            self._started[request_id] = expire

    def ended(self, request_id: str | None) -> None:
        if self.driven:
            return  # delivered once the response is out (_after_response)
        fallback = self._fallback
        if fallback is not None or request_id is None:
            (fallback or Inline(self._delivery)).ended(request_id)
            return
        with self._cond:
            self._ended.add(request_id)
            if not self._hooked:  # else the posted response wakes the thread
                self._cond.notify_all()

    def _response_posted(self, request_id: str) -> None:
        if self.driven:
            if not self._closed:
                self._after_response()
            return
        with self._cond:
            self._posted.add(request_id)
            self._cond.notify_all()

    def _after_response(self) -> None:
        """On the runtime's thread, the response just posted: the invocation's event (in
        the socket's buffer since it began), the spans, then the extension's ``next``."""
        deadline = None
        if self._fallback is None:
            try:
                event = self._client.read_event(EVENT_WAIT_S)
                if event is not None:
                    deadline = event.deadline()
            except Exception as exc:
                self._lost(exc)
        try:
            _explain_pending(deadline)
            self._pace.deliver()
        except Exception as exc:
            logger.warning("tracing: delivery after the response failed: %s", exc)
        if self._fallback is None:
            try:
                self._client.send_next()
            except Exception as exc:
                self._lost(exc)

    def _run(self) -> None:
        try:
            while not self._closed:
                event = self._client.next_event()
                if event is not None:
                    self._handle(event)
        except BaseException as exc:
            if not self._closed:
                self._lost(exc)

    def _handle(self, event: InvokeEvent) -> None:
        rid = event.request_id
        deadline = event.deadline()
        cond = self._cond
        # Hooked, the thread is woken once per invocation: when the runtime has posted
        # the response; else when the span ends.
        done: Callable[[], bool] = (
            (lambda: rid in self._posted) if self._hooked else (lambda: rid in self._ended)
        )
        with cond:
            if self._wrapped():
                cond.wait_for(
                    lambda: rid in self._started or rid in self._ended or done(),
                    max(0.0, min(START_WAIT_S, deadline - time.monotonic())),
                )
            expire = self._started.get(rid)
            if expire is not None and rid not in self._ended:
                expire_at = deadline - self._margin
                ended = cond.wait_for(
                    lambda: rid in self._ended or done(), max(0.0, expire_at - time.monotonic())
                )
                if not ended and self._margin > 0:
                    cond.release()
                    try:
                        expire()
                        self._delivery.flush(self._margin * 0.8)
                    finally:
                        cond.acquire()
                    cond.wait_for(done, max(0.0, deadline - time.monotonic()))
            if self._hooked and rid in self._ended:
                # The response goes out right after the span's end: let it, briefly, so
                # that delivery does not take the GIL from it.
                cond.wait_for(lambda: rid in self._posted, POST_WAIT_S)
            self._started.clear()
            self._ended.clear()
            self._posted.clear()
        try:
            _explain_pending(deadline)  # after the response, before the spans leave
            self._pace.deliver()
        except Exception as exc:
            logger.warning("tracing: delivery after the response failed: %s", exc)

    def resume(self) -> None:
        """After a SnapStart restore: start the extension's thread again if the restore
        lost it, on the Extensions API the environment has now, as the same extension.

        A microVM restore keeps threads, so in Lambda the thread is alive and this does
        nothing; the emulator's restore forks, which keeps only the calling thread (and
        the SIGTERM watcher is installed again with it).
        """
        if self._closed or self._fallback is not None:
            return
        if self.driven:
            if self._client.connected():
                return  # a microVM restore keeps it
        elif self._thread is not None and self._thread.is_alive():
            return
        api = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
        try:
            self._client.reopen(api)
        except Exception as exc:
            self._fallback = Inline(self._delivery)
            logger.warning("tracing: no delivery extension after restore (%s); inline", exc)
            return
        self._cond = threading.Condition()  # one held by a lost thread would stay held
        self._started.clear()
        self._ended.clear()
        self._posted.clear()
        if self.driven:
            try:
                self._client.send_next()
            except Exception as exc:
                self._lost(exc)
        else:
            self._start_thread()
        if self.on_close is not None:
            self.on_close()
            self.on_close = install_sigterm(self._delivery)

    def close(self) -> None:
        self._closed = True
        self._client.close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


#: The longest a registration may go on in the background once init stopped waiting.
_LATE_REGISTRATION_S = 10.0
#: The most init waits for the registration request to be sent before it goes on.
_SEND_WAIT_S = 0.005


class Registration:
    """The extension's registration, under way on a thread of its own from its creation.

    :func:`tracing.setup_tracing` starts it before it builds the provider, so the
    Extensions API's round trip overlaps that work; :meth:`wait` then bounds what
    init waits beyond it.  A registration that takes longer is not
    abandoned: the Extensions API may register it all the same, and Lambda would
    then wait for this extension's ``next`` before every freeze.  So if it
    succeeds after init stopped waiting (or after :meth:`abandon`), its thread
    answers every event at once (delivery stays inline): the environment is
    never held.
    """

    def __init__(self, client: ExtensionClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._outcome: str | None = None
        self._gave_up = False
        self._finished = threading.Event()
        self._sent = threading.Event()
        threading.Thread(target=self._register, name=f"{NAME}-register", daemon=True).start()
        # Let the request go out before init goes on: the thread would otherwise wait
        # for the GIL while init imports, and the round trip would not overlap them.
        self._sent.wait(_SEND_WAIT_S)

    def _register(self) -> None:
        from tracing.extension import ExtensionError

        try:
            self.client.register(NAME, timeout=_LATE_REGISTRATION_S, sent=self._sent.set)
            outcome = ""
        except (ExtensionError, OSError) as exc:
            outcome = str(exc) or type(exc).__name__
        self._sent.set()  # or failed before it was sent: init need not wait for it
        with self._lock:
            self._outcome = outcome
            late = self._gave_up
            self._finished.set()
        if late and not outcome:
            _answer_events(self.client)

    def wait(self, timeout: float) -> str | None:
        """Wait at most ``timeout`` seconds more; None when registered, else why not.  (Not
        counted from the start: on a loaded machine setup's own work would use it up.)"""
        self._finished.wait(timeout)
        with self._lock:
            if not self._finished.is_set():
                self._gave_up = True
                return f"no answer within {timeout * 1000:.0f} ms"
        return self._outcome or None

    def abandon(self) -> None:
        """Not to be used (setup failed): an extension registered anyway only calls ``next``."""
        with self._lock:
            self._gave_up = True
            registered = self._finished.is_set() and self._outcome == ""
        if registered:
            threading.Thread(
                target=_answer_events, args=(self.client,), name=f"{NAME}-idle", daemon=True
            ).start()


def _wants_extension(kind: str, env: Any) -> bool:
    """Whether delivery ``kind`` goes through the extension here: in on-demand Lambda (an
    Extensions API, not Managed Instances) and a mode that delivers after the response."""
    if env.get("AWS_LAMBDA_MAX_CONCURRENCY") and kind != "inline":
        return False
    return bool(env.get("AWS_LAMBDA_RUNTIME_API")) and kind in (
        "after-response",
        "periodic",
        "auto",
    )


def start_registration(setting: str, environ: Any = None) -> Registration | None:
    """The registration :func:`choose` will need for ``setting`` here, started now; None
    when it needs none (or the Extensions API's address is unusable)."""
    env = os.environ if environ is None else environ
    if not _wants_extension(setting.partition(",")[0], env):
        return None
    from tracing.extension import ExtensionClient, ExtensionError

    try:
        return Registration(ExtensionClient(env["AWS_LAMBDA_RUNTIME_API"]))
    except ExtensionError:
        return None  # choose() says why


def _answer_events(client: ExtensionClient) -> None:
    """An extension that only calls ``next`` (one registered too late to deliver)."""
    try:
        while True:
            client.next_event()
    except Exception as exc:
        logger.warning("tracing: the late-registered extension stopped: %s", exc)


def _under_awslambdaric() -> bool:
    """True when awslambdaric's bootstrap is importing the handler (this is its init): it
    will post every response through the client :func:`_hook_runtime` hooks."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith("awslambdaric."):
            return True
        frame = frame.f_back
    return False


def _hook_runtime(posted: Callable[[str], None]) -> bool:
    """Have awslambdaric say when it has posted a response (or an error).

    Delivery waits for that, not only for the span's end: this thread would
    otherwise take the GIL while the main thread still serialises and posts the
    response, and the caller would wait for it after all.  Without awslambdaric
    (or with a version whose client differs) delivery starts at the span's end.
    """
    module = sys.modules.get("awslambdaric.lambda_runtime_client")
    client = getattr(module, "LambdaRuntimeClient", None)
    if client is None:
        return False
    hooked = False
    for name in ("post_invocation_result", "post_invocation_error"):
        original = getattr(client, name, None)
        if not callable(original):
            continue
        if getattr(original, "__tracing_original__", None) is not None:
            original = original.__tracing_original__  # hooked before (a new setup)

        def hook(
            self: Any, invoke_id: str, *args: Any, _original: Any = original, **kwargs: Any
        ) -> Any:
            try:
                return _original(self, invoke_id, *args, **kwargs)
            finally:
                posted(invoke_id)

        hook.__tracing_original__ = original  # type: ignore[attr-defined]
        setattr(client, name, hook)
        hooked = True
    return hooked


def install_sigterm(delivery: Delivery) -> Callable[[], None] | None:
    """On SIGTERM, deliver what is pending within :data:`SHUTDOWN_BUDGET_S`, then stop.

    Python runs a signal handler in the main thread, once that thread runs
    Python code again, while the kernel hands a process's SIGTERM to any of its
    threads.  awslambdaric's main thread (3.11 mode), or its polling thread
    (3.12+ mode), waits in its native client; a SIGTERM there ends that wait
    with an error and the main thread runs the handler on its way out.  A
    SIGTERM taken by another thread (the extension's, in a socket read that
    resumes) never wakes the main thread: for that case the signal's byte on
    the wakeup fd wakes a thread of ours.  Whichever comes first delivers, then
    calls the handler installed before (if any) or ends the process as the
    default action would.  Nothing is blocked, so child processes the function
    starts see SIGTERM as usual.  Main thread only (``signal.signal`` is).  It
    uses ``_signal``, the C module under ``signal``: importing ``signal`` builds
    enums for about 2 ms of a cold start.
    Returns what undoes it (:func:`tracing.shutdown_tracing` calls it), or None.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = _signal.getsignal(_signal.SIGTERM)
    once = threading.Lock()
    done = threading.Event()

    def shut_down() -> None:
        with once:  # a second caller waits here while the first delivers and exits
            if done.is_set():
                return
            try:
                delivery.flush(SHUTDOWN_BUDGET_S)
            except Exception as exc:
                logger.warning("tracing: delivery at shutdown failed: %s", exc)
            done.set()
        if callable(previous):
            previous(_signal.SIGTERM, None)
            return
        os._exit(128 + _signal.SIGTERM)

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        _signal.signal(_signal.SIGTERM, lambda signum, frame: shut_down())
        older = _signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError) as exc:
        logger.info("tracing: no delivery at SIGTERM: %s", exc)
        os.close(read_end)
        os.close(write_end)
        return None

    def watch() -> None:
        while True:
            data = os.read(read_end, 64)
            if not data:
                return
            if older >= 0:  # keep whoever set a wakeup fd before us informed
                with contextlib.suppress(OSError):
                    os.write(older, data)
            if _signal.SIGTERM in data:
                shut_down()
                return

    threading.Thread(target=watch, name=f"{NAME}-sigterm", daemon=True).start()

    def uninstall() -> None:
        if threading.current_thread() is threading.main_thread():
            _signal.signal(_signal.SIGTERM, previous)
            _signal.set_wakeup_fd(older)
        os.close(write_end)  # the watcher reads EOF and ends

    return uninstall


def choose(
    setting: str,
    delivery: Delivery,
    *,
    margin_s: float,
    wrapped: Callable[[], bool],
    environ: Any = None,
    registration: Registration | None = None,
) -> DeliveryMode:
    """The mode ``DSQLTRACE_DELIVERY`` asks for, falling back to inline (one warning);
    ``registration`` is one :func:`start_registration` started for it."""
    env = os.environ if environ is None else environ
    kind, _, interval = setting.partition(",")
    interval_s = int(interval) / 1000.0 if kind == "periodic" else None
    if env.get("AWS_LAMBDA_MAX_CONCURRENCY") and kind != "inline":
        # Lambda Managed Instances: no INVOKE events to register for, nothing freezes.
        background = Background(delivery, interval_s=interval_s or BACKGROUND_INTERVAL_S)
        background.on_close = install_sigterm(delivery)
        return background
    if not _wants_extension(kind, env):
        if kind in ("after-response", "periodic"):  # asked for, but no Extensions API
            logger.info("tracing: not in Lambda (no AWS_LAMBDA_RUNTIME_API); delivering inline")
            return Inline(delivery, interval_s=interval_s)
        return Inline(delivery)
    api = env["AWS_LAMBDA_RUNTIME_API"]
    from tracing.extension import ExtensionClient, ExtensionError

    if registration is None:
        try:
            registration = Registration(ExtensionClient(api))
        except ExtensionError as exc:
            logger.warning("tracing: no delivery extension (%s); delivering inline", exc)
            return Inline(delivery, interval_s=interval_s)
    client = registration.client
    registered = registration.wait(REGISTER_TIMEOUT_S)
    if registered is not None:
        logger.warning(
            "tracing: could not register the delivery extension (%s); delivering inline",
            registered,
        )
        return Inline(delivery, interval_s=interval_s)
    mode = AfterResponse(
        delivery, client, margin_s=margin_s, interval_s=interval_s, wrapped=wrapped
    )
    mode.on_close = install_sigterm(delivery)
    return mode
