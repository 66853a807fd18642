"""The AWS CDK app (Python) that deploys the Todo API: cluster, functions, URLs, IAM, Datadog.

- :mod:`infra.asset`: the Lambda code asset, built without Docker;
- :mod:`infra.stack`: the stack;
- :mod:`infra.app`: the CDK entry point (``make synth``; ``cdk.json`` points at it).
"""
