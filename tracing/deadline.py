"""Impending timeouts: the invocation's span is ended and sent just before Lambda's deadline.

When a handler runs out of time, Lambda stops the function with no chance to
send anything; the trace of the slowest, most interesting invocations would
be lost (datadog-lambda-python does the same for this reason).  One daemon
thread, started at the first invocation, waits for the current invocation's
deadline minus a margin; arming and disarming it costs a lock, not a thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

__all__ = ["DeadlineWatch"]


class DeadlineWatch:
    """Calls a function when the armed deadline (``time.monotonic()``) arrives, unless disarmed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline = 0.0
        self._callback: Callable[[], None] | None = None
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, deadline: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` at ``deadline`` (a ``time.monotonic()`` value) unless disarmed."""
        with self._cond:
            if self._stopped:
                return
            self._deadline = deadline
            self._callback = callback
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tracing-deadline", daemon=True
                )
                self._thread.start()
            elif deadline < self._wake_at:
                self._cond.notify()  # the watcher sleeps past this deadline: wake it

    def disarm(self) -> None:
        """Forget the armed callback (the invocation ended in time)."""
        with self._cond:
            self._callback = None

    @property
    def armed(self) -> bool:
        """True while a callback waits for its deadline."""
        return self._callback is not None

    def stop(self) -> None:
        """Disarm and end the watcher thread (tracing is being shut down)."""
        with self._cond:
            self._stopped = True
            self._callback = None
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                if self._callback is None:
                    self._wake_at = float("inf")
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._wake_at = self._deadline
                    self._cond.wait(remaining)
                    continue
                callback, self._callback = self._callback, None
            with contextlib.suppress(Exception):  # never let the watcher die
                callback()
