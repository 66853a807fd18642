"""AWS Signature Version 4 without boto3: query presigning (DSQL auth tokens) and header
signing (OTLP to AWS's endpoint), byte for byte as botocore's ``SigV4Auth`` signs.

Importing botocore costs about 180 ms of cold start; the credentials Lambda
puts in the environment are all these functions need.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

__all__ = ["Credentials", "amz_date", "presign_query", "sign_headers"]

_ALGORITHM = "AWS4-HMAC-SHA256"


class Credentials:
    """An access key, its secret and the session token (if any); never printed."""

    __slots__ = ("access_key", "secret_key", "token")

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token

    def __repr__(self) -> str:
        return "Credentials(***)"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Credentials | None:
        """The credentials in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
        ``AWS_SESSION_TOKEN``, as Lambda sets them; None when they are missing."""
        access_key = environ.get("AWS_ACCESS_KEY_ID")
        secret_key = environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            return None
        return cls(access_key, secret_key, environ.get("AWS_SESSION_TOKEN") or None)


def _quote(value: str) -> str:
    return quote(value, safe="-_.~")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def amz_date(now: datetime.datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` of ``now`` (default: the current time), in UTC."""
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def _signature(secret_key: str, date: str, scope: str, canonical_request: str) -> str:
    day, region, service, _ = scope.split("/")
    string_to_sign = (
        f"{_ALGORITHM}\n{date}\n{scope}\n"
        + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    )
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def presign_query(
    host: str,
    region: str,
    service: str,
    params: list[tuple[str, str]],
    credentials: Credentials,
    *,
    expires_in: int,
    now: datetime.datetime | None = None,
) -> str:
    """The signed query string of ``GET https://host/?params``, only ``host`` signed."""
    date = amz_date(now)
    scope = f"{date[:8]}/{region}/{service}/aws4_request"
    params = [
        *params,
        ("X-Amz-Algorithm", _ALGORITHM),
        ("X-Amz-Credential", f"{credentials.access_key}/{scope}"),
        ("X-Amz-Date", date),
        ("X-Amz-Expires", str(expires_in)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    if credentials.token is not None:
        params.append(("X-Amz-Security-Token", credentials.token))
    encoded = [(_quote(k), _quote(v)) for k, v in params]
    canonical_query = "&".join(f"{k}={v}" for k, v in sorted(encoded))
    empty = hashlib.sha256(b"").hexdigest()
    canonical_request = f"GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{empty}"
    signature = _signature(credentials.secret_key, date, scope, canonical_request)
    query = "&".join(f"{k}={v}" for k, v in encoded)
    return f"{query}&X-Amz-Signature={signature}"


def sign_headers(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    region: str,
    service: str,
    credentials: Credentials,
    *,
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """The headers to add to a request so that AWS accepts it: ``X-Amz-Date``,
    ``X-Amz-Security-Token`` (with session credentials) and ``Authorization``.

    ``host`` is the ``Host`` header's value and ``path`` the absolute path
    (no query); ``headers`` are the request's other headers, all signed.
    """
    date = amz_date(now)
    added = {"X-Amz-Date": date}
    if credentials.token is not None:
        added["X-Amz-Security-Token"] = credentials.token
    signed = {k.lower(): " ".join(str(v).split()) for k, v in {**headers, **added}.items()}
    signed["host"] = host
    names = sorted(signed)
    canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
    signed_names = ";".join(names)
    canonical_path = quote(path or "/", safe="/-_.~")
    canonical_request = (
        f"{method}\n{canonical_path}\n\n{canonical_headers}\n{signed_names}\n"
        + hashlib.sha256(body).hexdigest()
    )
    scope = f"{date[:8]}/{region}/{service}/aws4_request"
    signature = _signature(credentials.secret_key, date, scope, canonical_request)
    added["Authorization"] = (
        f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return added
