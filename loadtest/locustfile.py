"""Locust load for the Todo API: the request mix and SigV4 signing of ``dsqltrace load``,
with Locust's distributed workers, web UI and CSV statistics.

Against a deployed stack (the URLs are the CDK stack's outputs)::

    TODO_READ_URL=https://<select-id>.lambda-url.<region>.on.aws \\
    locust -f loadtest/locustfile.py --host https://<insert-id>.lambda-url.<region>.on.aws

Distributed, one master and a worker per core or machine (each worker needs this
project installed with its ``load`` extra, and AWS credentials)::

    locust -f loadtest/locustfile.py --master --host ...        # web UI on :8089
    locust -f loadtest/locustfile.py --worker --master-host <master address>

Headless with CSV statistics::

    locust -f loadtest/locustfile.py --headless -u 30 -r 30 -t 60s --csv out/todo --host ...

Environment variables
---------------------
``TODO_READ_URL``
    Where GETs go (default: the ``--host``, as with ``dsqltrace serve``'s one URL).
``TODO_MIX``
    Operation weights as ``dsqltrace load --mix`` takes them (default ``post=1,get=1``).
``TODO_SIGN``
    ``auto`` (default: sign requests to ``*.lambda-url.<region>.on.aws``, the AWS_IAM
    Function URLs), ``always`` or ``never``; credentials come from botocore's chain.

Statistics are named after the invocation spans (``POST /todos``, ``GET /todos``,
``GET /todos/{id}``, ``PATCH /todos/{id}``), so Locust's table and the traces line up.
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, between, task

from dsqltrace.load import ROUTES, Signer, parse_mix, region_of, request_for

#: Todos created by this worker process, for ``get-one`` and ``patch``.
CREATED: list[str] = []


class TodoUser(FastHttpUser):
    """One virtual user: requests chosen by the mix's weights, as ``dsqltrace load`` does."""

    wait_time = between(0, 0)  # closed loop, like the seed's Postman runner

    def on_start(self) -> None:
        self.write_url = (self.host or "").rstrip("/")
        self.read_url = os.environ.get("TODO_READ_URL", self.write_url).rstrip("/")
        mix = parse_mix(os.environ.get("TODO_MIX", "post=1,get=1"))
        self.ops, self.weights = list(mix), list(mix.values())
        self.rng = random.Random()
        self.n = id(self)
        sign = os.environ.get("TODO_SIGN", "auto")
        self.signers = {}
        for url in {self.write_url, self.read_url}:
            region = region_of(url)
            if sign == "always" or (sign == "auto" and region):
                self.signers[url] = Signer(region or "us-east-1")

    @task
    def request(self) -> None:
        op = self.rng.choices(self.ops, self.weights)[0]
        if op in ("get-one", "patch") and not CREATED:
            op = "post"
        method, base, path, body = request_for(
            op, self.write_url, self.read_url, self.rng, CREATED, self.n
        )
        url = base + path
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"content-type": "application/json"} if body is not None else {}
        signer = self.signers.get(base)
        if signer is not None:
            headers = signer.headers(method, url, data, headers)
        with self.client.request(
            method, url, data=data or None, headers=headers, name=ROUTES[op], catch_response=True
        ) as response:
            if op == "post" and response.status_code == 201:
                CREATED.append(response.json()["id"])
            if response.status_code >= 500 or response.status_code == 0:
                response.failure(f"HTTP {response.status_code}")
            else:
                response.success()  # 4xx are the API's answers, not load failures
