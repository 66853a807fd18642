"""The CDK app: synthesized offline, checked with aws_cdk.assertions and cfn-lint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent import ROOT

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def synth(tmp_path: Path, **context: object):
    from aws_cdk.assertions import Template

    from infra.app import build_app

    asset = tmp_path / "asset"
    (asset / "handlers").mkdir(parents=True, exist_ok=True)
    (asset / "handlers" / "__init__.py").write_text("")
    defaults = json.loads((ROOT / "cdk.json").read_text())["context"]
    app, stack = build_app(
        context={**defaults, "assetDir": str(asset), **context}, outdir=str(tmp_path / "cdk.out")
    )
    assembly = app.synth()
    return (
        Template.from_stack(stack),
        Path(assembly.directory) / f"{stack.stack_name}.template.json",
        app,
    )


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("synth"))


def functions(template) -> dict:
    return template.find_resources("AWS::Lambda::Function")


def test_cluster_with_deletion_protection(synthesized) -> None:
    template, _, _ = synthesized
    template.resource_count_is("AWS::DSQL::Cluster", 1)
    template.has_resource_properties("AWS::DSQL::Cluster", {"DeletionProtectionEnabled": True})


def test_functions_runtime_architecture_memory_timeout(synthesized) -> None:
    template, _, _ = synthesized
    found = functions(template)
    assert len(found) == 2
    handlers = sorted(f["Properties"]["Handler"] for f in found.values())
    assert handlers == ["handlers.insert.handler", "handlers.select.handler"]
    for function in found.values():
        props = function["Properties"]
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["MemorySize"] == 256
        assert props["Timeout"] == 10
        assert "LoggingConfig" in props


def test_iam_is_scoped_to_the_cluster_arn(synthesized) -> None:
    template, _, _ = synthesized
    policies = template.find_resources("AWS::IAM::Policy")
    cluster_id = next(iter(template.find_resources("AWS::DSQL::Cluster")))
    dsql_statements = [
        st
        for p in policies.values()
        for st in p["Properties"]["PolicyDocument"]["Statement"]
        if any(
            str(a).startswith("dsql:")
            for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        )
    ]
    assert len(dsql_statements) == 2
    for statement in dsql_statements:
        assert statement["Action"] == "dsql:DbConnectAdmin"
        assert statement["Resource"] == {"Fn::GetAtt": [cluster_id, "ResourceArn"]}
    text = json.dumps(policies)
    assert '"dsql:*"' not in text and '"Resource": "*"' not in text


def test_custom_role_gets_db_connect_only(tmp_path: Path) -> None:
    template, _, _ = synth(tmp_path, dbUser="app_user")
    text = json.dumps(template.find_resources("AWS::IAM::Policy"))
    assert 'dsql:DbConnect"' in text and "DbConnectAdmin" not in text
    for function in functions(template).values():
        assert function["Properties"]["Environment"]["Variables"]["DB_USER"] == "app_user"


def test_function_urls_use_iam_auth_by_default(synthesized) -> None:
    template, _, _ = synthesized
    urls = template.find_resources("AWS::Lambda::Url")
    assert len(urls) == 2
    assert {u["Properties"]["AuthType"] for u in urls.values()} == {"AWS_IAM"}
    outputs = template.find_outputs("*")
    assert {"InsertUrl", "SelectUrl", "ClusterEndpoint"} <= set(outputs)


def test_public_urls_only_on_request_and_with_a_warning(tmp_path: Path) -> None:
    from aws_cdk.assertions import Annotations, Match

    template, _, app = synth(tmp_path, publicUrls=True, corsOrigins=["https://example.com"])
    urls = template.find_resources("AWS::Lambda::Url")
    assert {u["Properties"]["AuthType"] for u in urls.values()} == {"NONE"}
    assert all(
        u["Properties"]["Cors"]["AllowOrigins"] == ["https://example.com"] for u in urls.values()
    )
    stack = app.node.find_child("DsqlTodoApi")
    Annotations.from_stack(stack).has_warning("*", Match.string_like_regexp("publicUrls=true"))


def test_datadog_extension_layer_and_environment(synthesized) -> None:
    template, _, _ = synthesized
    for function in functions(template).values():
        props = function["Properties"]
        layer = json.dumps(props["Layers"])
        assert "464622532012:layer:Datadog-Extension-ARM:88" in layer
        env = props["Environment"]["Variables"]
        assert env["DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT"] == "localhost:4318"
        assert (
            env["DD_SERVICE"] == "todo-api"
            and env["DD_ENV"] == "dev"
            and env["DD_VERSION"] == "0.1.0"
        )
        assert env["DD_SITE"] == "datadoghq.com"
        assert env["DD_API_KEY_SECRET_ARN"] == {"Ref": "DatadogSecretArn"}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
        assert env["CLUSTER_ENDPOINT"]["Fn::GetAtt"][1] == "Endpoint"


def test_untraced_baseline_has_no_extension_and_no_secret(tmp_path: Path) -> None:
    """``-c tracing=false``: the same functions without tracing, to measure what it costs."""
    template, _, _ = synth(tmp_path, tracing="false")
    assert "DatadogSecretArn" not in template.to_json().get("Parameters", {})
    for function in functions(template).values():
        props = function["Properties"]
        assert "Layers" not in props
        env = props["Environment"]["Variables"]
        assert env["OTEL_SDK_DISABLED"] == "true"
        assert not [key for key in env if key.startswith("DD_")]
    assert "secretsmanager" not in json.dumps(template.find_resources("AWS::IAM::Policy"))


def test_xray_exporter_signs_to_aws_without_the_datadog_layer(tmp_path: Path) -> None:
    """``-c exporter=xray``: spans to AWS's OTLP endpoint; xray:PutTraceSegments, no layer."""
    template, _, _ = synth(tmp_path, exporter="xray")
    assert "DatadogSecretArn" not in template.to_json().get("Parameters", {})
    for function in functions(template).values():
        props = function["Properties"]
        assert "Layers" not in props
        env = props["Environment"]["Variables"]
        assert env["OTEL_TRACES_EXPORTER"] == "xray"
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env  # the region's endpoint, by default
        assert "DD_API_KEY_SECRET_ARN" not in env
    policies = json.dumps(template.find_resources("AWS::IAM::Policy"))
    assert policies.count('"xray:PutTraceSegments"') == 2
    assert "secretsmanager" not in policies


def test_stdout_otlp_exporter_with_a_forwarder_subscribed_to_both_log_groups(
    tmp_path: Path,
) -> None:
    from infra.stack import STDOUT_OTLP_PATTERN

    url = "https://otlp.example.com/v1/traces"
    template, _, _ = synth(tmp_path, exporter="stdout-otlp", forwardTo=url)
    found = functions(template)
    forwarder = [
        f for f in found.values() if f["Properties"]["Handler"] == "tracing.forwarder.handler"
    ]
    assert len(forwarder) == 1 and len(found) == 3
    assert forwarder[0]["Properties"]["Environment"]["Variables"] == {
        "FORWARD_ENDPOINT": url,
        "OTEL_SDK_DISABLED": "true",
    }
    for function in found.values():
        props = function["Properties"]
        assert "Layers" not in props
        if props["Handler"].startswith("handlers."):
            env = props["Environment"]["Variables"]
            assert env["OTEL_TRACES_EXPORTER"] == "stdout-otlp"
            assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == url
    filters = template.find_resources("AWS::Logs::SubscriptionFilter")
    assert len(filters) == 2
    assert {f["Properties"]["FilterPattern"] for f in filters.values()} == {STDOUT_OTLP_PATTERN}
    template.resource_count_is("AWS::Lambda::Permission", 2)  # logs may invoke the forwarder
    without, _, _ = synth(tmp_path / "plain", exporter="stdout-otlp")
    without.resource_count_is("AWS::Logs::SubscriptionFilter", 0)


def test_bad_exporter_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exporter must be one of"):
        synth(tmp_path, exporter="zipkin")
    with pytest.raises(ValueError, match="forwardTo needs exporter=stdout-otlp"):
        synth(tmp_path / "b", forwardTo="https://x")


def test_x86_layer_name(tmp_path: Path) -> None:
    template, _, _ = synth(tmp_path, architecture="x86_64")
    for function in functions(template).values():
        assert function["Properties"]["Architectures"] == ["x86_64"]
        assert ":layer:Datadog-Extension:88" in json.dumps(function["Properties"]["Layers"])


def test_no_plaintext_secrets(synthesized) -> None:
    template, _, _ = synthesized
    for function in functions(template).values():
        env = function["Properties"]["Environment"]["Variables"]
        assert "DD_API_KEY" not in env
        assert not any("PASSWORD" in k or "SECRET_ACCESS" in k for k in env)


def test_log_retention(synthesized) -> None:
    template, _, _ = synthesized
    groups = template.find_resources("AWS::Logs::LogGroup")
    assert len(groups) == 2
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {14}


def test_cfn_lint_finds_no_errors(synthesized) -> None:
    _, template_file, _ = synthesized
    _cfn_lint(template_file)


def _cfn_lint(template_file: Path) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", str(template_file)],
        capture_output=True,
        text=True,
    )
    # Exit code: a bit mask, 2 for errors (4 warnings, 8 informational).
    assert not result.returncode & 2, result.stdout + result.stderr
    assert result.returncode & 1 == 0, result.stderr  # 1: cfn-lint itself failed
    errors = [line for line in result.stdout.splitlines() if ":E" in line]
    assert errors == [], result.stdout


def test_real_asset_holds_only_runtime_code(tmp_path: Path) -> None:
    from infra.asset import build, size_of

    folder = build(tmp_path / "asset", arch="arm64")
    names = {p.name for p in folder.iterdir()}
    assert {"tracing", "handlers", "psycopg", "psycopg_binary", "opentelemetry"} <= names
    assert not names & {"boto3", "botocore", "ddtrace", "dsqltrace", "requests", "google", "grpc"}
    assert any("aarch64" in p.name for p in folder.rglob("*.so*"))
    assert size_of(folder) < 30e6


def test_real_asset_ships_bytecode_for_lambdas_python(tmp_path: Path) -> None:
    """Lambda's code folder is read-only: without .pyc files every cold start compiles."""
    import importlib.util

    from infra.asset import build, find_interpreter

    if find_interpreter("3.13") is None:
        pytest.skip("no Python 3.13 interpreter on this machine: the asset has no bytecode")
    folder = build(tmp_path / "asset", arch="arm64", python="3.13")
    sources = [p for p in (folder / "tracing").glob("*.py")]
    assert sources
    magic = None
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
        header = pyc.read_bytes()[:16]
        flags = int.from_bytes(header[4:8], "little")
        assert flags == 0b01, (pyc, flags)  # hash-based, not checked against the source
        magic = header[:4]
    assert magic != importlib.util.MAGIC_NUMBER  # 3.13's bytecode, not this interpreter's
    assert (folder / "opentelemetry" / "sdk" / "trace" / "__pycache__").is_dir()


def test_snapstart_publishes_versions_and_puts_the_urls_on_an_alias(tmp_path: Path) -> None:
    template, template_file, _ = synth(tmp_path, snapStart=True)
    for function in functions(template).values():
        if function["Properties"]["Handler"].startswith("handlers."):
            assert function["Properties"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    versions = template.find_resources("AWS::Lambda::Version")
    aliases = template.find_resources("AWS::Lambda::Alias")
    assert len(versions) == 2 and len(aliases) == 2
    assert {a["Properties"]["Name"] for a in aliases.values()} == {"live"}
    version_ids = set(versions)
    for alias in aliases.values():
        assert alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0] in version_ids
    urls = template.find_resources("AWS::Lambda::Url")
    assert len(urls) == 2
    function_ids = set(functions(template))
    targets = set()
    for url in urls.values():
        assert url["Properties"]["Qualifier"] == "live"  # the alias, not $LATEST
        targets.add(url["Properties"]["TargetFunctionArn"]["Fn::GetAtt"][0])
    assert targets == {a["Properties"]["FunctionName"]["Ref"] for a in aliases.values()}
    assert targets <= function_ids
    _cfn_lint(template_file)


def test_without_snapstart_no_version_or_alias(synthesized) -> None:
    template, _, _ = synthesized
    assert not template.find_resources("AWS::Lambda::Alias")
    for function in functions(template).values():
        assert "SnapStart" not in function["Properties"]
