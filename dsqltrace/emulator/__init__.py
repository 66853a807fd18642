"""A Lambda execution-environment emulator driving the real ``awslambdaric``.

- :mod:`.events`: HTTP request to Function URL event (payload 2.0) and the
  function's result back to an HTTP response, as AWS documents them;
- :mod:`.environment`: one execution environment: a process of the runtime
  interface client, its Runtime API, its freezes and thaws;
- :mod:`.function`: a function's environments: reuse, cold starts, the
  concurrency limit, idle retirement, deadlines;
- :mod:`.server`: the Function URL front on one port, routing to functions.
"""
