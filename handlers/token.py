"""IAM auth tokens for Aurora DSQL: the password of every new connection.

A token is a SigV4-presigned URL made locally (no network call).  It is checked
only when a connection opens, so a fresh one is made for each new connection
(the seed reused its cold-start token forever).  The token is never logged,
put on a span, or shown in an error.

Two ways to sign, with the same result byte for byte:

- with the credentials Lambda puts in the environment (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), :func:`presign` signs
  directly: no boto3 import (about 180 ms) and no client creation (about 95
  ms) on the cold start;
- otherwise boto3's ``dsql`` client (made once per environment) signs with
  its full credential chain (profiles, SSO, container credentials...).
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

from tracing import names, traced
from tracing.sigv4 import Credentials, presign_query

__all__ = ["TOKEN_LIFETIME_S", "TokenGenerator", "presign"]


TOKEN_LIFETIME_S = 900


def presign(
    hostname: str,
    region: str,
    action: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    *,
    expires_in: int = TOKEN_LIFETIME_S,
    now: datetime.datetime | None = None,
) -> str:
    """A DSQL auth token: ``hostname/?Action=...&X-Amz-...&X-Amz-Signature=...``.

    Signs as botocore's ``generate_db_connect[_admin]_auth_token`` does (SigV4
    query signing, service ``dsql``, ``GET /``, only ``host`` signed), with
    :func:`tracing.sigv4.presign_query`.
    """
    credentials = Credentials(access_key, secret_key, session_token)
    query = presign_query(
        hostname,
        region,
        "dsql",
        [("Action", action)],
        credentials,
        expires_in=expires_in,
        now=now,
    )
    return f"{hostname}/?{query}"


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

    @property
    def action(self) -> str:
        return "DbConnectAdmin" if self.user == "admin" else "DbConnect"

    def _dsql_client(self) -> Any:
        if self._client is None:
            import boto3

            _silence_signing_logs()
            self._client = boto3.client("dsql", region_name=self.region)
        return self._client

    def forget(self) -> None:
        """Drop the boto3 client and the credentials it resolved (before a snapshot)."""
        self._client = None

    def generate(self) -> str:
        """A new token (valid for 15 minutes; only checked when connecting)."""
        env = os.environ
        access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        attributes = {
            names.SERVER_ADDRESS: self.endpoint,
            names.CLOUD_REGION: self.region,
            names.DB_USER: self.user,
            names.DSQL_TOKEN_SIGNER: "environment" if access_key and secret_key else "boto3",
        }
        with traced(names.DSQL_TOKEN_GENERATE, attributes=attributes):
            if access_key and secret_key:
                return presign(
                    self.endpoint,
                    self.region,
                    self.action,
                    access_key,
                    secret_key,
                    env.get("AWS_SESSION_TOKEN") or None,
                )
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
