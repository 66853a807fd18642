"""dsqltrace: the developer-machine side of dsql-lambda-tracing.

Embedded PostgreSQL, the Lambda execution-environment emulator, the local OTLP
collector, the load runner and the latency report, behind one console command,
``dsqltrace``.  Lambda code never imports this package and it never ships in
the Lambda asset.
"""
