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
import hashlib
import hmac
import logging
import os
from typing import Any
from urllib.parse import quote

from tracing import names, traced

__all__ = ["TOKEN_LIFETIME_S", "TokenGenerator", "presign"]


TOKEN_LIFETIME_S = 900
_EMPTY_PAYLOAD = hashlib.sha256(b"").hexdigest()


def _quote(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


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
    query signing, service ``dsql``, ``GET /``, only ``host`` signed).
    """
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    scope = f"{day}/{region}/dsql/aws4_request"
    params = [
        ("Action", action),
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires_in)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if session_token is not None:
        params.append(("X-Amz-Security-Token", session_token))
    encoded = [(_quote(k), _quote(v)) for k, v in params]
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(encoded))
    canonical_request = f"GET\n/\n{canonical_query}\nhost:{hostname}\n\nhost\n{_EMPTY_PAYLOAD}"
    string_to_sign = (
        f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
        + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    )
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, "dsql", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    query = "&".join(f"{k}={v}" for k, v in encoded)
    return f"{hostname}/?{query}&X-Amz-Signature={signature}"


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
