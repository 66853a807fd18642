"""A module-scoped LocalStack for the reliability and fuzz suites."""

from __future__ import annotations

import tempfile
from pathlib import Path

from dsqltrace.stack import LocalStack


def new_stack(**kwargs) -> LocalStack:
    folder = Path(tempfile.mkdtemp(prefix="dsqltrace-stack-"))
    folder.chmod(0o755)  # the embedded server runs as `postgres` when we are root
    return LocalStack(folder, **kwargs).start()
