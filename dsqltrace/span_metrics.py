"""Span-based metrics (``dashboards/metrics/span-metrics.json``): checked offline, pushed with
the dashboards.

The spans data source of a dashboard widget sees indexed spans only: a
retention sample biased toward errors and slow requests, whose percentiles are
not the traffic's.  A span-based metric is computed by Datadog from all
ingested spans, before retention, so the token, connect, query and OCC widgets
chart these metrics instead (``p95:dsqltrace.dsql.connect.duration{...}``).

The file holds ``{"span_metrics": [<SpansMetricCreateRequest>, ...]}``.
Validation loads each entry into ``datadog-api-client``'s model, and checks
that every operation name and attribute its filter or compute names is one the
toolkit or the Todo API emits, that ids are unique and start with
:data:`PREFIX`.  ``push`` creates a metric that does not exist and updates one
that does (the id is the key), so pushing twice changes nothing twice.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from handlers import names as app_names
from tracing import names

__all__ = ["FILE", "PREFIX", "defined", "push", "validate"]

FILE = Path(__file__).resolve().parent.parent / "dashboards" / "metrics" / "span-metrics.json"
#: Every span-based metric of the project is named ``dsqltrace.<...>``.
PREFIX = "dsqltrace."
_OPERATION = re.compile(r'operation_name:(\([^)]*\)|"[^"]+"|\S+)')
_ATTRIBUTE = re.compile(r"@([a-z_][a-z0-9_.]*)")
#: Attributes a filter or a compute may name: the toolkit's and Datadog's own.
_KNOWN_ATTRIBUTES = {
    value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
} | {"duration"}


def _entries(path: Path) -> list[dict[str, Any]]:
    raw = json.loads(path.read_text())
    entries = raw.get("span_metrics") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError('expected {"span_metrics": [...]}')
    return entries


def validate(path: Path = FILE) -> list[str]:
    """Every problem in the span-metrics file, each as ``file: path: message``."""
    from datadog_api_client import ApiClient, Configuration
    from datadog_api_client.v2.model.spans_metric_create_request import (
        SpansMetricCreateRequest,
    )

    try:
        entries = _entries(path)
    except (OSError, ValueError) as exc:
        return [f"{path}: {exc}"]
    errors: list[str] = []
    seen: set[str] = set()
    operations = names.OPERATION_NAMES | app_names.OPERATION_NAMES
    client = ApiClient(Configuration())
    for i, entry in enumerate(entries):
        where = f"{path}: $.span_metrics[{i}]"
        try:
            model = client.deserialize(json.dumps(entry), (SpansMetricCreateRequest,), True)
        except (TypeError, ValueError) as exc:
            errors.append(f"{where}: {exc}")
            continue
        if getattr(model, "_unparsed", False) or getattr(model.data, "_unparsed", False):
            errors.append(f"{where}: not a span-based metric the API would accept")
            continue
        metric_id = str(model.data.id)
        if not metric_id.startswith(PREFIX):
            errors.append(f"{where}.data.id: {metric_id!r} does not start with {PREFIX!r}")
        if metric_id in seen:
            errors.append(f"{where}.data.id: {metric_id!r} is defined twice")
        seen.add(metric_id)
        attributes = entry["data"]["attributes"]
        query = str(attributes.get("filter", {}).get("query", ""))
        for found in _OPERATION.findall(query):
            for op in found.strip("()").split(" OR "):  # one name, or (a OR b)
                if op.strip().strip('"') not in operations:
                    errors.append(f"{where}: operation_name {op!r} is not one the toolkit emits")
        path_ = str(attributes.get("compute", {}).get("path", ""))
        for attribute in _ATTRIBUTE.findall(f"{query} {path_}"):
            if attribute not in _KNOWN_ATTRIBUTES:
                errors.append(f"{where}: attribute @{attribute} is not one the toolkit sets")
    return errors


def defined(path: Path = FILE) -> set[str]:
    """The ids of the metrics the file defines (none if it cannot be read)."""
    try:
        return {str(e["data"]["id"]) for e in _entries(path)}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def push(path: Path, client: Any, *, dry_run: bool) -> list[str]:
    """Create or update each span-based metric through ``client`` (an ``ApiClient``)."""
    from datadog_api_client.v2.api.spans_metrics_api import SpansMetricsApi
    from datadog_api_client.v2.model.spans_metric_create_request import (
        SpansMetricCreateRequest,
    )
    from datadog_api_client.v2.model.spans_metric_update_request import (
        SpansMetricUpdateRequest,
    )

    api = SpansMetricsApi(client)
    existing = {str(m.id) for m in (api.list_spans_metrics().get("data") or [])}
    done = []
    for entry in _entries(path):
        metric_id = str(entry["data"]["id"])
        if metric_id not in existing:
            if not dry_run:
                body = client.deserialize(json.dumps(entry), (SpansMetricCreateRequest,), True)
                api.create_spans_metric(body)
            done.append(f"{'would create' if dry_run else 'created'} span metric {metric_id}")
            continue
        attributes = dict(entry["data"]["attributes"])
        compute = attributes.pop("compute", {})
        update: dict[str, Any] = {
            k: v for k, v in attributes.items() if k in ("filter", "group_by")
        }
        if "include_percentiles" in compute:  # the one part of compute that can change
            update["compute"] = {"include_percentiles": compute["include_percentiles"]}
        payload = {"data": {"type": "spans_metrics", "attributes": update}}
        if not dry_run:
            body = client.deserialize(json.dumps(payload), (SpansMetricUpdateRequest,), True)
            api.update_spans_metric(metric_id, body)
        done.append(f"{'would update' if dry_run else 'updated'} span metric {metric_id}")
    return done
