"""The benchmarks' caller: a process of its own that times requests to a Function URL.

    python -m bench.caller        # reads "URL" lines on stdin, answers "STATUS MS" lines

Run inside the emulator's process, the caller would share its event loop:
the emulator's own work for an environment (an extension's ``next``, its
bookkeeping) would then delay the caller's reading of a response that had
already left, which Lambda's front end never does.  As a process it reads the
response as soon as the kernel has it.  One kept-alive connection; a POST with
a small JSON body each time.
"""

from __future__ import annotations

import http.client
import sys
import time
from urllib.parse import urlsplit

BODY = b'{"name": "bench"}'


def main() -> int:
    connections: dict[str, http.client.HTTPConnection] = {}
    for line in sys.stdin:
        url = urlsplit(line.strip())
        conn = connections.get(url.netloc)
        if conn is None:
            conn = connections[url.netloc] = http.client.HTTPConnection(url.netloc, timeout=60)
        started = time.perf_counter()
        try:
            conn.request("POST", url.path, BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            connections.pop(url.netloc, None)
            status = 0
        elapsed = (time.perf_counter() - started) * 1000
        sys.stdout.write(f"{status} {elapsed:.4f}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
