"""IAM auth tokens for Aurora DSQL: the password of every new connection.

A token is a SigV4-presigned URL made locally (no network call).  It is checked
only when a connection opens, so a fresh one is made for each new connection
(the seed reused its cold-start token forever).  The boto3 ``dsql`` client is
made once per execution environment.  The token is never logged, put on a
span, or shown in an error.
"""

from __future__ import annotations

import logging
from typing import Any

from tracing import names, traced

TOKEN_LIFETIME_S = 900


class _NoSigningDetails(logging.Filter):
    """Drops botocore's DEBUG lines that show a signature (enough to rebuild the token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _silence_signing_logs() -> None:
    auth_logger = logging.getLogger("botocore.auth")
    if not any(isinstance(f, _NoSigningDetails) for f in auth_logger.filters):
        auth_logger.addFilter(_NoSigningDetails())


class TokenGenerator:
    """Makes auth tokens for ``user`` on the cluster at ``endpoint``."""

    def __init__(self, endpoint: str, region: str, user: str = "admin") -> None:
        self.endpoint = endpoint
        self.region = region
        self.user = user
        self._client: Any = None

    def _dsql_client(self) -> Any:
        if self._client is None:
            import boto3

            _silence_signing_logs()
            self._client = boto3.client("dsql", region_name=self.region)
        return self._client

    def generate(self) -> str:
        """A new token (valid for 15 minutes; only checked when connecting)."""
        attributes = {
            names.SERVER_ADDRESS: self.endpoint,
            names.CLOUD_REGION: self.region,
            names.DSQL_USER: self.user,
        }
        with traced(names.DSQL_TOKEN_GENERATE, attributes=attributes):
            client = self._dsql_client()
            if self.user == "admin":
                token: str = client.generate_db_connect_admin_auth_token(
                    self.endpoint, self.region, TOKEN_LIFETIME_S
                )
            else:
                token = client.generate_db_connect_auth_token(
                    self.endpoint, self.region, TOKEN_LIFETIME_S
                )
        return token
