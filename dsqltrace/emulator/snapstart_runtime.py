"""The runtime process of a SnapStart function in the emulator: awslambdaric, made to fork.

Run as ``python -m dsqltrace.emulator.snapstart_runtime <handler>`` with
``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``.  awslambdaric runs init, the
before-snapshot hooks, then calls the Runtime API's ``restore/next``, which in
Lambda returns in each restored copy of the microVM.  Here that call returns
in each *fork* of this process (the template): the emulator sends a restore
request on the control socket (fd ``DSQLTRACE_SNAPSTART_FD``), the template
forks, and the child becomes the restored environment:

- its own session (process group) and cgroups, its own stdout;
- Python's ``random`` state as it was at the snapshot (``fork`` reseeds it; a
  memory snapshot does not), so ids repeat unless something reseeds;
- every socket inherited from init replaced by a dead one: the peer's reads
  give end-of-file, writes fail, as a TCP connection does after a restore;
- the Runtime API of its own environment: awslambdaric's native client reads
  the address once, when loaded, so the template keeps it unloaded and each
  copy loads it afresh.

awslambdaric then runs the after-restore hooks and asks for invocations.
What a fork does not keep: threads other than the forking one (a microVM
restore keeps them all).  This module is the emulator's; it is never in the
Lambda asset, and the function's code does not import it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import sys

__all__ = ["main"]

#: The control socket's file descriptor, passed by the emulator.
FD_VARIABLE = "DSQLTRACE_SNAPSTART_FD"


def _sever_inherited_sockets() -> None:
    """Replace every inherited socket with one whose peer is gone."""
    dead, peer = socket.socketpair()
    peer.close()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd == dead.fileno():
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.dup2(dead.fileno(), fd)
        except OSError:
            continue
    dead.close()


def _become_restored(client: object, request: dict[str, object], out_fd: int) -> None:
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = str(os.getpid())
    for path in request.get("cgroups", []):  # type: ignore[attr-defined]
        with open(str(path), "w") as f:
            f.write(pid)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    _sever_inherited_sockets()
    api = str(request["api"])
    os.environ["AWS_LAMBDA_RUNTIME_API"] = api
    # awslambdaric's native client reads the address once, when it is first loaded: the
    # template never loaded it (see main), each restored copy loads it now.
    del sys.modules["runtime_client"]
    import runtime_client
    from awslambdaric import lambda_runtime_client

    runtime_client.initialize_client(lambda_runtime_client._user_agent())
    lambda_runtime_client.runtime_client = runtime_client
    client.lambda_runtime_address = api  # type: ignore[attr-defined]


def _serve_restores(client: object, control: socket.socket) -> None:
    """Fork once per restore request; returns in each child, exits in the template."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # restored copies are reaped by themselves
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 65536, 1)
        except OSError:
            os._exit(0)
        if not message:
            os._exit(0)  # the emulator went away
        request = json.loads(message)
        state = random.getstate()
        pid = os.fork()
        if pid == 0:
            control.close()
            random.setstate(state)  # as a memory snapshot would have it
            _become_restored(client, request, fds[0])
            return
        for fd in fds:
            os.close(fd)
        control.sendall(json.dumps({"pid": pid}).encode())


def main() -> None:
    fd = int(os.environ.pop(FD_VARIABLE))
    control = socket.socket(fileno=fd)
    # The template never talks to the Runtime API through awslambdaric's native client
    # (init errors and restore/next go through http.client): keep it unloaded, so that
    # each restored copy loads it with its own environment's address.
    sys.modules["runtime_client"] = None  # type: ignore[assignment]
    from awslambdaric import __main__ as ric_main
    from awslambdaric import lambda_runtime_client

    base = lambda_runtime_client.BaseLambdaRuntimeClient
    original = base.restore_next

    def restore_next(self: object) -> None:
        original(self)  # the emulator answers once init (extensions included) is over
        _serve_restores(self, control)

    base.restore_next = restore_next  # type: ignore[method-assign]
    ric_main.main(sys.argv)


if __name__ == "__main__":
    main()
