"""The log subscription of log-based delivery (exporter ``stdout-otlp``), as CloudWatch
Logs and a forwarder function would run it in AWS.

The emulator reads every line a runtime process writes; a line that starts
with the otlp-stdout marker is not logged but forwarded: its payload is
decoded from base64 and POSTed to the ``endpoint`` it names, by the same code
as the forwarder function deployed in AWS (:func:`tracing.forwarder.post`).
The spans then reach the local collector as if the function had sent them
over OTLP, so ``dsqltrace report`` works the same.
"""

from __future__ import annotations

import asyncio
import binascii
import json
from collections.abc import Callable

from tracing.forwarder import post

#: How a forwarded line starts (the envelope's first key, as tracing.stdout writes it).
PREFIX = b'{"__otel_otlp_stdout"'


def is_envelope(line: bytes) -> bool:
    return line.startswith(PREFIX)


#: Tells the local collector that a request came through the log subscription: its spans
#: left the function as a log line, so "late" (sent after the freeze) does not apply.
VIA_HEADER = "X-Dsqltrace-Via"


def _post(line: bytes) -> int:
    return post(json.loads(line), headers={VIA_HEADER: "logs"})


async def forward(line: bytes, log: Callable[[str], None]) -> bool:
    """POST one envelope line's payload where it says; False (logged) when that failed."""
    try:
        status = await asyncio.get_running_loop().run_in_executor(None, _post, line)
    except (ValueError, KeyError, TypeError, binascii.Error, OSError) as exc:
        log(f"log subscription: could not forward an otlp-stdout line: {type(exc).__name__}")
        return False
    return 200 <= status < 300
