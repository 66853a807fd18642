"""The CDK entry point: ``make synth`` (offline) or ``npx aws-cdk deploy`` (``cdk.json``)."""

from __future__ import annotations

import os
from typing import Any

import aws_cdk as cdk

from infra import asset
from infra.stack import Settings, TodoApiStack


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def settings_from_context(app: cdk.App) -> Settings:
    ctx = app.node.try_get_context
    architecture = str(ctx("architecture") or "arm64")
    asset_dir = ctx("assetDir") or str(asset.build(arch=architecture))
    origins = ctx("corsOrigins") or []
    if isinstance(origins, str):
        origins = [o.strip() for o in origins.split(",") if o.strip()]
    return Settings(
        asset_dir=asset_dir,
        public_urls=_bool(ctx("publicUrls"), False),
        cors_origins=tuple(origins),
        architecture=architecture,
        memory_size=int(ctx("memorySize") or 256),
        timeout_s=int(ctx("timeout") or 10),
        datadog_extension_version=str(ctx("datadogExtensionVersion") or "88"),
        datadog_site=str(ctx("datadogSite") or "datadoghq.com"),
        env=str(ctx("env") or "dev"),
        version=str(ctx("version") or "0.1.0"),
        db_user=str(ctx("dbUser") or "admin"),
        deletion_protection=_bool(ctx("deletionProtection"), True),
        log_retention_days=int(ctx("logRetentionDays") or 14),
        tracing=_bool(ctx("tracing"), True),
        exporter=str(ctx("exporter") or "datadog"),
        forward_to=str(ctx("forwardTo")) if ctx("forwardTo") else None,
        snap_start=_bool(ctx("snapStart"), False),
    )


def build_app(
    context: dict[str, Any] | None = None, outdir: str | None = None
) -> tuple[cdk.App, TodoApiStack]:
    app = cdk.App(context=context, outdir=outdir)
    stack = TodoApiStack(
        app,
        str(app.node.try_get_context("stackName") or "DsqlTodoApi"),
        settings=settings_from_context(app),
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
    )
    return app, stack


def main() -> None:
    app, _ = build_app(outdir=os.environ.get("CDK_OUTDIR") or "cdk.out")
    app.synth()


if __name__ == "__main__":
    main()
