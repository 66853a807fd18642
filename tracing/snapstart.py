"""SnapStart: init delivered once; after each restore, unique ids, fresh delivery, a traced restore.

With SnapStart Lambda runs init once, when a version is published, snapshots
the environment's memory and restores copies of it for cold starts.  When
``AWS_LAMBDA_INITIALIZATION_TYPE`` is ``snap-start``, :func:`tracing.setup_tracing`
registers two runtime hooks through ``snapshot_restore_py`` (imported only
then; Lambda's Python runtimes ship it):

- *before the snapshot* (run last of all before-snapshot hooks): init's phases
  are delivered as a trace of their own, ``aws.lambda.init`` marked
  ``aws.lambda.initialization_type=snap-start``, once for every restore to come
  (spans that could not be delivered are dropped: each copy would send them);
  then the exporter's connection is closed, so no socket is in the snapshot.
- *after restore* (run first of all after-restore hooks): Python's ``random``
  and the toolkit's id generator (:func:`tracing.tracer.reseed`) are reseeded
  from the OS, so restored copies draw different trace and span ids (the
  SDK's ``RandomIdGenerator`` uses ``random``; ddtrace's generator is
  reseeded too); a restore record starts (:func:`tracing.coldstart.restore_began`),
  every later after-restore hook is recorded as an ``aws.lambda.after_restore_hook``
  phase, with what it does (a new token, a new connection) under it; delivery's
  threads are started again where the restore lost them, and the pause that
  failed exports before the snapshot set is forgotten.

The first invocation of a restored environment is a cold start
(``faas.coldstart=true``, ``aws.lambda.initialization_type=snap-start``) and
carries ``aws.lambda.snapstart_restore`` with those phases under it.

Functions register their own hooks with :func:`on_snapshot` and :func:`on_restore`,
which do nothing without SnapStart: close the database connection before the
snapshot, open one with a fresh token after restore (as :mod:`handlers` do).

Environment variables
---------------------
- ``AWS_LAMBDA_INITIALIZATION_TYPE``: ``snap-start`` turns this on (set by Lambda).
- ``DSQLTRACE_SNAPSTART_HOOKS``: ``false`` leaves the toolkit's hooks out.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from tracing import coldstart, names
from tracing.runtime import Runtime, logger

__all__ = ["active", "install", "on_restore", "on_snapshot", "reseed", "uninstall"]

Hook = Callable[[], Any]

_installed: list[tuple[list[Any], Any]] = []


def active() -> bool:
    """True in an environment initialised for SnapStart."""
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start"


def _registries() -> tuple[list[Any], list[Any]] | None:
    try:
        import snapshot_restore_py
    except ImportError:
        logger.warning(
            "tracing: SnapStart is on but snapshot_restore_py is missing; no runtime hooks"
        )
        return None
    return snapshot_restore_py.get_before_snapshot(), snapshot_restore_py.get_after_restore()


def on_snapshot(hook: Hook) -> Hook:
    """Run ``hook`` before the snapshot (SnapStart only; else nothing).  Returns ``hook``."""
    if active():
        import snapshot_restore_py

        snapshot_restore_py.register_before_snapshot(hook)
    return hook


def on_restore(hook: Hook) -> Hook:
    """Run ``hook`` after each restore (SnapStart only; else nothing).  Returns ``hook``.

    An exception fails the restore (the runtime reports ``Runtime.AfterRestoreError``):
    a hook that reaches the network should catch its failures and leave the work to
    the first request.
    """
    if active():
        import snapshot_restore_py

        snapshot_restore_py.register_after_restore(hook)
    return hook


def install(rt: Runtime) -> bool:
    """Register the toolkit's hooks for ``rt``: before-snapshot last to run, after-restore
    first.  False when SnapStart is off or ``snapshot_restore_py`` is missing."""
    if not active():
        return False
    registries = _registries()
    if registries is None:
        return False
    before, after = registries
    uninstall()
    # Before-snapshot hooks run last-registered first: index 0 runs after every other.
    before_entry: tuple[Any, tuple[()], dict[str, Any]] = (
        functools.partial(_before_snapshot, rt),
        (),
        {},
    )
    after_entry: tuple[Any, tuple[()], dict[str, Any]] = (
        functools.partial(_after_restore, rt),
        (),
        {},
    )
    before.insert(0, before_entry)
    after.insert(0, after_entry)
    _installed.extend([(before, before_entry), (after, after_entry)])
    return True


def uninstall() -> None:
    """Remove the toolkit's hooks (:func:`tracing.testing.reset_tracing`)."""
    while _installed:
        registry, entry = _installed.pop()
        if entry in registry:
            registry.remove(entry)


def _before_snapshot(rt: Runtime) -> None:
    try:
        _deliver_init(rt)
    except Exception as exc:  # the snapshot must never fail for tracing
        logger.warning("tracing: could not prepare delivery for the snapshot: %s", exc)


def _deliver_init(rt: Runtime) -> None:
    delivered = False
    try:
        coldstart.snapshot(rt.tracer, os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "handler"))
        delivered = rt.delivery.flush()
    finally:
        drop = getattr(rt.delivery, "drop_pending", None)
        if not delivered and callable(drop):
            # Kept, they would be in every restored copy's memory, and each would send them.
            dropped = drop()
            if dropped:
                logger.warning(
                    "tracing: %d spans of init not delivered before the snapshot; dropped",
                    dropped,
                )
        disconnect = getattr(rt.delivery, "disconnect", None)
        if callable(disconnect):
            disconnect()


def reseed() -> None:
    """Draw new state from the OS for the generators trace and span ids come from."""
    random.seed()
    lean = sys.modules.get("tracing.tracer")
    if lean is not None:
        lean.reseed()
    native = sys.modules.get("ddtrace.internal.native")
    seed = getattr(native, "seed", None)
    if callable(seed):
        seed()


def _after_restore(rt: Runtime) -> None:
    start = time.time_ns()
    reseed()
    try:
        coldstart.restore_began(start)
        registries = _registries()
        if registries is not None:
            _record_later_hooks(registries[1])
        for part in (rt.mode, rt.delivery):
            resume = getattr(part, "resume", None)
            if callable(resume):
                resume()
        coldstart.mark_ready()
    except Exception as exc:  # the restore must never fail for tracing
        logger.warning("tracing: could not reopen delivery after the restore: %s", exc)


def _record_later_hooks(after: list[Any]) -> None:
    """Wrap the hooks registered after the toolkit's (they run after it) as phases."""
    for index, (func, args, kwargs) in enumerate(after):
        if getattr(func, "__tracing_restore_hook__", False):
            continue
        if isinstance(func, functools.partial) and func.func is _after_restore:
            continue
        after[index] = (_recorded(func), args, kwargs)


def _recorded(func: Callable[..., Any]) -> Callable[..., Any]:
    from tracing.spans import traced

    name = getattr(func, "__qualname__", None) or type(func).__name__

    @functools.wraps(func)
    def hook(*args: Any, **kwargs: Any) -> Any:
        with traced(names.LAMBDA_AFTER_RESTORE_HOOK, attributes={names.CODE_FUNCTION_NAME: name}):
            return func(*args, **kwargs)

    hook.__tracing_restore_hook__ = True  # type: ignore[attr-defined]
    return hook
