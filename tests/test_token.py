"""The boto3-free token path signs exactly as botocore does."""

from __future__ import annotations

import datetime
import random
import string

import boto3
import pytest
from botocore.credentials import Credentials

from handlers.token import TokenGenerator, presign


def random_case(rng: random.Random) -> dict:
    region = rng.choice(["us-east-1", "us-east-2", "eu-west-1", "ap-northeast-1", "eu-central-2"])
    cluster = "".join(rng.choices(string.ascii_lowercase + string.digits, k=26))
    host = rng.choice(
        [f"{cluster}.dsql.{region}.on.aws", "localhost", f"db-{cluster[:6]}.internal"]
    )
    key = "AKIA" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=16))
    secret = "".join(rng.choices(string.ascii_letters + string.digits + "/+", k=40))
    token = None
    if rng.random() < 0.5:
        token = "".join(
            rng.choices(string.ascii_letters + string.digits + "/+=", k=rng.randint(100, 400))
        )
    return {
        "host": host,
        "region": region,
        "key": key,
        "secret": secret,
        "token": token,
        "expires": rng.choice([1, 60, 900, 3600, 604800]),
        "admin": rng.random() < 0.5,
        "now": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        + datetime.timedelta(seconds=rng.randint(0, 5 * 365 * 86400)),
    }


_clients: dict[str, object] = {}


def botocore_token(case: dict, monkeypatch: pytest.MonkeyPatch) -> str:
    import botocore.auth

    fixed = case["now"].replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: fixed)
    client = _clients.get(case["region"])
    if client is None:  # one client per region; each case brings its own credentials
        session = boto3.session.Session(
            aws_access_key_id="AKIAPLACEHOLDER00000",
            aws_secret_access_key="x",
            region_name=case["region"],
        )
        client = _clients[case["region"]] = session.client("dsql")
    client._request_signer._credentials = Credentials(case["key"], case["secret"], case["token"])
    method = (
        client.generate_db_connect_admin_auth_token
        if case["admin"]
        else client.generate_db_connect_auth_token
    )
    return method(case["host"], case["region"], case["expires"])


def test_presign_matches_botocore_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261127)
    for _ in range(200):
        case = random_case(rng)
        ours = presign(
            case["host"],
            case["region"],
            "DbConnectAdmin" if case["admin"] else "DbConnect",
            case["key"],
            case["secret"],
            case["token"],
            expires_in=case["expires"],
            now=case["now"],
        )
        assert ours == botocore_token(case, monkeypatch), case


def test_generator_uses_environment_credentials_without_boto3(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session/token+=")
    generator = TokenGenerator("abc.dsql.us-east-1.on.aws", "us-east-1")
    token = generator.generate()
    assert token.startswith("abc.dsql.us-east-1.on.aws/?Action=DbConnectAdmin&")
    assert "X-Amz-Security-Token=session%2Ftoken%2B%3D" in token
    assert generator._client is None  # boto3's client was never made
    assert "AKIAENVIRONMENT00000" in token
    custom = TokenGenerator("abc.dsql.us-east-1.on.aws", "us-east-1", user="app").generate()
    assert "Action=DbConnect&" in custom
    from tracing import coldstart

    phases = [p for p in coldstart.pending_phases() if p.name == "dsql.token.generate"]
    assert [p.attributes["dsql.token.signer"] for p in phases] == ["environment", "environment"]
    assert all("X-Amz" not in str(p.attributes) for p in phases)


def test_environment_path_never_imports_boto3() -> None:
    import json
    import subprocess
    import sys

    from tests.agent import ROOT

    code = (
        "import sys, json\n"
        "from handlers.token import TokenGenerator\n"
        "TokenGenerator('abc.dsql.us-east-1.on.aws', 'us-east-1').generate()\n"
        "print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')]))"
    )
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "AKIAX", "AWS_SECRET_ACCESS_KEY": "s"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def test_generator_falls_back_to_boto3_credential_chain(monkeypatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = AKIAPROFILE000000000\n"
        "aws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    generator = TokenGenerator("abc.dsql.us-east-1.on.aws", "us-east-1")
    token = generator.generate()
    assert generator._client is not None
    assert "X-Amz-Credential=AKIAPROFILE000000000%2F" in token
