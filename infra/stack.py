"""The Todo API stack: a DSQL cluster, two traced functions, their URLs, least-privilege IAM.

Settings come from CDK context (``cdk.json``, or ``-c key=value``):

- ``publicUrls`` (false): Function URLs with auth type NONE instead of AWS_IAM (warns);
- ``corsOrigins`` ([]): origins allowed to call the URLs from a browser;
- ``architecture`` ("arm64"), ``memorySize`` (256, as in the seed), ``timeout`` (10 s);
- ``datadogExtensionVersion`` (layer version), ``datadogSite``, ``env``, ``version``;
- ``dbUser`` ("admin"; another role gets ``dsql:DbConnect`` instead of ``dsql:DbConnectAdmin``);
- ``deletionProtection`` (true), ``logRetentionDays`` (14);
- ``tracing`` (true): false deploys the same functions untraced (``OTEL_SDK_DISABLED``,
  no Datadog extension, no secret), the baseline for measuring what tracing costs;
- ``exporter`` ("datadog"): where spans go.  ``datadog``: OTLP to the Datadog Lambda
  Extension (layer, API key secret); ``xray``: AWS's OTLP endpoint, SigV4-signed
  (``xray:PutTraceSegments``, no layer, no secret); ``stdout-otlp``: one log line per
  export (no layer, no secret), and with ``forwardTo`` (a collector's OTLP/HTTP URL) a
  forwarder function subscribed to both log groups that posts the lines' spans there;
- ``snapStart`` (false): SnapStart on published versions.  Each function then gets
  a published version and a ``live`` alias on it, and its Function URL is the
  alias's (SnapStart applies to published versions only, never to ``$LATEST``).

The Datadog API key is never in the template: the deployer passes the ARN of a
Secrets Manager secret (parameter ``DatadogSecretArn``), which the
extension reads through ``DD_API_KEY_SECRET_ARN``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import Annotations, Aws, CfnOutput, CfnParameter, Duration, Stack
from aws_cdk import aws_dsql as dsql
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_logs_destinations as logs_destinations
from constructs import Construct

DATADOG_ACCOUNT = "464622532012"
EXPORTERS = ("datadog", "xray", "stdout-otlp")
#: The CloudWatch Logs filter pattern that selects otlp-stdout lines.
STDOUT_OTLP_PATTERN = '"__otel_otlp_stdout"'
FUNCTIONS = {
    "Insert": ("handlers.insert.handler", "POST, PATCH, DELETE /todos"),
    "Select": ("handlers.select.handler", "GET /todos"),
}


@dataclass(frozen=True)
class Settings:
    """What the stack is built from (see the module docstring for the context keys)."""

    asset_dir: str
    public_urls: bool = False
    cors_origins: tuple[str, ...] = ()
    architecture: str = "arm64"
    memory_size: int = 256
    timeout_s: int = 10
    datadog_extension_version: str = "88"
    datadog_site: str = "datadoghq.com"
    service: str = "todo-api"
    env: str = "dev"
    version: str = "0.1.0"
    db_user: str = "admin"
    deletion_protection: bool = True
    log_retention_days: int = 14
    tracing: bool = True
    exporter: str = "datadog"
    forward_to: str | None = None
    snap_start: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}")
        if self.forward_to is not None and self.exporter != "stdout-otlp":
            raise ValueError("forwardTo needs exporter=stdout-otlp")

    @property
    def datadog(self) -> bool:
        """Traced through the Datadog extension (its layer and its API key secret)."""
        return self.tracing and self.exporter == "datadog"


def datadog_extension_arn(region: str, architecture: str, version: str) -> str:
    """The Datadog Lambda Extension layer for a region, architecture and version."""
    name = "Datadog-Extension-ARM" if architecture == "arm64" else "Datadog-Extension"
    return f"arn:aws:lambda:{region}:{DATADOG_ACCOUNT}:layer:{name}:{version}"


class TodoApiStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: object
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        s = settings
        cluster = dsql.CfnCluster(
            self, "Cluster", deletion_protection_enabled=s.deletion_protection
        )
        arm = s.architecture == "arm64"
        connect_action = "dsql:DbConnectAdmin" if s.db_user == "admin" else "dsql:DbConnect"
        environment = {
            "CLUSTER_ENDPOINT": cluster.attr_endpoint,
            "DB_USER": s.db_user,
            **(self._tracing_environment(s) if s.tracing else {"OTEL_SDK_DISABLED": "true"}),
            **s.extra_env,
        }
        layers = (
            [
                lambda_.LayerVersion.from_layer_version_arn(
                    self,
                    "DatadogExtension",
                    datadog_extension_arn(Aws.REGION, s.architecture, s.datadog_extension_version),
                )
            ]
            if s.datadog
            else []
        )
        code = lambda_.Code.from_asset(s.asset_dir)
        forwarder = self._forwarder(s, code, arm) if s.forward_to else None
        auth = (
            lambda_.FunctionUrlAuthType.NONE
            if s.public_urls
            else lambda_.FunctionUrlAuthType.AWS_IAM
        )
        if s.public_urls:
            Annotations.of(self).add_warning(
                "publicUrls=true: the Function URLs accept unauthenticated requests from anyone"
            )
        cors = (
            lambda_.FunctionUrlCorsOptions(
                allowed_origins=list(s.cors_origins),
                allowed_methods=[lambda_.HttpMethod.ALL],
                allowed_headers=[
                    "content-type",
                    "authorization",
                    "x-amz-date",
                    "x-amz-security-token",
                    "x-amz-content-sha256",
                ],
            )
            if s.cors_origins
            else None
        )
        for name, (handler, routes) in FUNCTIONS.items():
            log_group = logs.LogGroup(
                self, f"{name}Logs", retention=_retention(s.log_retention_days)
            )
            function = lambda_.Function(
                self,
                f"{name}Function",
                description=f"Todo API on Aurora DSQL: {routes}",
                runtime=lambda_.Runtime.PYTHON_3_13,
                architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
                handler=handler,
                code=code,
                memory_size=s.memory_size,
                timeout=Duration.seconds(s.timeout_s),
                environment=environment,
                layers=layers,
                log_group=log_group,
                snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if s.snap_start else None,
            )
            # SnapStart restores published versions only: the URL points at an alias of one.
            target: lambda_.IFunction = (
                lambda_.Alias(
                    self, f"{name}Live", alias_name="live", version=function.current_version
                )
                if s.snap_start
                else function
            )
            function.add_to_role_policy(
                iam.PolicyStatement(actions=[connect_action], resources=[cluster.attr_resource_arn])
            )
            if s.datadog:
                function.add_to_role_policy(
                    iam.PolicyStatement(
                        actions=["secretsmanager:GetSecretValue"],
                        resources=[environment["DD_API_KEY_SECRET_ARN"]],
                    )
                )
            elif s.tracing and s.exporter == "xray":
                # X-Ray has no resource-level permissions for this action.
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=["xray:PutTraceSegments"], resources=["*"])
                )
            if forwarder is not None:
                logs.SubscriptionFilter(
                    self,
                    f"{name}SpansToForwarder",
                    log_group=log_group,
                    destination=logs_destinations.LambdaDestination(forwarder),
                    filter_pattern=logs.FilterPattern.literal(STDOUT_OTLP_PATTERN),
                )
            url = target.add_function_url(auth_type=auth, cors=cors)
            CfnOutput(self, f"{name}Url", value=url.url, description=f"Function URL: {routes}")
        CfnOutput(self, "ClusterEndpoint", value=cluster.attr_endpoint)
        CfnOutput(self, "ClusterArn", value=cluster.attr_resource_arn)

    def _forwarder(self, s: Settings, code: lambda_.Code, arm: bool) -> lambda_.Function:
        """The function that posts the otlp-stdout lines' spans to ``forwardTo``."""
        log_group = logs.LogGroup(self, "ForwarderLogs", retention=_retention(s.log_retention_days))
        return lambda_.Function(
            self,
            "ForwarderFunction",
            description="Forwards otlp-stdout log lines to an OTLP/HTTP collector",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
            handler="tracing.forwarder.handler",
            code=code,
            memory_size=128,
            timeout=Duration.seconds(30),
            # Not traced itself: its spans would be log lines it forwards again.
            environment={"FORWARD_ENDPOINT": str(s.forward_to), "OTEL_SDK_DISABLED": "true"},
            log_group=log_group,
        )

    def _tracing_environment(self, s: Settings) -> dict[str, str]:
        """Where spans go: the Datadog extension (API key in a secret), AWS's OTLP
        endpoint, or the function's log lines."""
        service = {"DD_SERVICE": s.service, "DD_ENV": s.env, "DD_VERSION": s.version}
        if s.exporter == "xray":
            return {**service, "OTEL_TRACES_EXPORTER": "xray"}
        if s.exporter == "stdout-otlp":
            endpoint = s.forward_to or "http://localhost:4318/v1/traces"
            return {
                **service,
                "OTEL_TRACES_EXPORTER": "stdout-otlp",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
            }
        api_key_secret = CfnParameter(
            self,
            "DatadogSecretArn",
            type="String",
            description="ARN of the Secrets Manager secret holding the Datadog API key",
            no_echo=True,
            allowed_pattern=r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$",
        )
        return {
            "DD_SERVICE": s.service,
            "DD_ENV": s.env,
            "DD_VERSION": s.version,
            "DD_SITE": s.datadog_site,
            "DD_API_KEY_SECRET_ARN": api_key_secret.value_as_string,
            # The extension receives OTLP/HTTP on localhost:4318; no Datadog tracing layer.
            "DD_OTLP_CONFIG_RECEIVER_PROTOCOLS_HTTP_ENDPOINT": "localhost:4318",
            "DD_TRACE_ENABLED": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318",
        }


def _retention(days: int) -> logs.RetentionDays:
    mapping = {
        1: logs.RetentionDays.ONE_DAY,
        3: logs.RetentionDays.THREE_DAYS,
        5: logs.RetentionDays.FIVE_DAYS,
        7: logs.RetentionDays.ONE_WEEK,
        14: logs.RetentionDays.TWO_WEEKS,
        30: logs.RetentionDays.ONE_MONTH,
        90: logs.RetentionDays.THREE_MONTHS,
        365: logs.RetentionDays.ONE_YEAR,
    }
    if days not in mapping:
        raise ValueError(f"logRetentionDays must be one of {sorted(mapping)}")
    return mapping[days]
