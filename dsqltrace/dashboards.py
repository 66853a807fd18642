"""``dsqltrace dashboards validate|push``: the dashboards in ``dashboards/``, checked, deployed.

``validate`` loads each JSON file into the ``datadog-api-client`` models and
reports, with the file and the JSON path: missing required fields; any part
the client could not parse (it does not raise for a bad widget type, a bad
enum value or a misspelt key: it marks the object ``_unparsed``); keys the
model does not know; template variables used but not defined; layout rules;
and operation names in queries that neither the toolkit nor the Todo API emits
(:data:`tracing.names.OPERATION_NAMES`, :data:`handlers.names.OPERATION_NAMES`).

Span-based metrics in ``dashboards/metrics/`` (:mod:`dsqltrace.span_metrics`) are
validated too, and a dashboard may chart only the ones defined there.

``push`` creates or updates each dashboard, then each span-based metric, in a
Datadog org (``DD_API_KEY``, ``DD_APP_KEY``, ``DD_SITE``).  A dashboard is found again by the marker
``(id: <file stem>)`` in its description, so pushing twice updates, never
duplicates.  ``--dry-run`` says what it would do.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
from pathlib import Path
from typing import Any

from dsqltrace import span_metrics
from handlers import names as app_names
from tracing import names

#: Every Datadog operation name a dashboard may query.
OPERATION_NAMES = names.OPERATION_NAMES | app_names.OPERATION_NAMES

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
_TEMPLATE_USE = re.compile(r"\$([A-Za-z_][\w-]*)")
_TRACE_METRIC = re.compile(
    r"(?<![\w.])trace\.([a-z0-9_.]+?)(?:\.(?:hits|errors|duration|apdex)(?:\.by_http_status)?)?\{"
)
#: A span-based metric of the project's, as a query names it.
_SPAN_METRIC = re.compile(r"(?<![\w.])(dsqltrace\.[a-z0-9_.]+)\{")
_OPERATION = re.compile(r'operation_name:("[^"]+"|\S+)')


def _model_module() -> Any:
    from datadog_api_client.model_utils import ModelComposed, ModelNormal, ModelSimple

    return ModelComposed, ModelNormal, ModelSimple


def _required(model: Any) -> list[str]:
    params = inspect.signature(type(model).__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.name not in ("self", "self_", "kwargs")
        and p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def _candidate(composed_cls: Any, raw: Any) -> Any:
    """The oneOf variant of ``composed_cls`` that ``raw`` was most likely meant to be.

    Variants are told apart by their enum fields (``type``, ``data_source``...):
    the one whose enums accept ``raw``'s values, and which knows most of its keys.
    """
    if not isinstance(raw, dict):
        return None
    best, best_score = None, 0
    for cls in getattr(composed_cls, "_composed_schemas", {}).get("oneOf", []):
        attribute_map = getattr(cls, "attribute_map", None)
        if not attribute_map:
            continue
        by_json = {v: k for k, v in attribute_map.items()}
        score = 0
        for key, value in raw.items():
            attr = by_json.get(key)
            if attr is None:
                continue
            score += 1
            declared = cls.openapi_types.get(attr, ())
            enum = declared[0] if declared else None
            allowed = getattr(enum, "allowed_values", None)
            if allowed is not None and isinstance(value, str):
                score += 10 if value in allowed else -100
        if score > best_score:
            best, best_score = cls, score
    return best


def _parse_as(cls: Any, raw: Any, path: str, errors: list[str]) -> Any:
    from datadog_api_client import ApiClient, Configuration
    from datadog_api_client.exceptions import ApiTypeError, ApiValueError

    try:
        return ApiClient(Configuration()).deserialize(json.dumps(raw), (cls,), True)
    except (ApiTypeError, ApiValueError, TypeError, ValueError) as exc:
        message = str(exc).replace("['received_data']", "").strip()
        missing = re.findall(r"'(\w+)'", message) if "required positional" in message else []
        if missing:
            message = "missing required " + ", ".join(repr(m) for m in missing)
        errors.append(f"{path}: {message} ({cls.__name__})")
        if isinstance(raw, dict):
            known = set(cls.attribute_map.values())
            errors.extend(
                f"{path}.{key}: unknown key for {cls.__name__}" for key in raw if key not in known
            )
        return None


def _walk(model: Any, raw: Any, path: str, errors: list[str], expected: Any = None) -> None:
    composed, normal, simple = _model_module()
    if isinstance(raw, list):
        if isinstance(model, list):
            item = expected[0] if isinstance(expected, list) else None
            for i, (m, r) in enumerate(zip(model, raw, strict=False)):
                _walk(m, r, f"{path}[{i}]", errors, item)
        return
    if isinstance(model, composed) or (
        model is not None and type(model).__name__ == "UnparsedObject" and expected is not None
    ):
        cls = expected if expected is not None else type(model)
        instance = model.get_oneof_instance() if isinstance(model, composed) else None
        if instance is None or getattr(model, "_unparsed", False):
            kind = raw.get("type") if isinstance(raw, dict) else None
            candidate = _candidate(cls, raw)
            if candidate is None:
                errors.append(
                    f"{path}: not a valid {cls.__name__}"
                    + (f": unknown type {kind!r}" if kind else "")
                )
                return
            # Parse it as the variant its "type" names, to point at what is wrong inside.
            instance = _parse_as(candidate, raw, path, errors)
            if instance is None:
                return
        model = instance
    if isinstance(model, simple):
        if getattr(model, "_unparsed", False):
            errors.append(f"{path}: invalid value {raw!r} for {type(model).__name__}")
        return
    if not isinstance(model, normal) or not isinstance(raw, dict):
        return
    json_keys = {v: k for k, v in type(model).attribute_map.items()}
    for key in raw:
        if key not in json_keys:
            errors.append(
                f"{path}.{key}: unknown key for {type(model).__name__} "
                f"(known: {', '.join(sorted(json_keys))})"
            )
    for name in _required(model):
        json_key = type(model).attribute_map.get(name, name)
        if json_key not in raw:
            errors.append(f"{path}: missing required {json_key!r} ({type(model).__name__})")
    unparsed_before = len(errors)
    types = type(model).openapi_types
    for key, value in raw.items():
        attr = json_keys.get(key)
        if attr is not None:
            declared = types.get(attr, (None,))
            child_type = declared[0] if declared else None
            _walk(model._data_store.get(attr), value, f"{path}.{key}", errors, child_type)
    if getattr(model, "_unparsed", False) and len(errors) == unparsed_before:
        errors.append(f"{path}: the client could not parse this {type(model).__name__}")


def _strings(raw: Any, path: str = "$") -> list[tuple[str, str]]:
    if isinstance(raw, str):
        return [(path, raw)]
    if isinstance(raw, list):
        return [s for i, v in enumerate(raw) for s in _strings(v, f"{path}[{i}]")]
    if isinstance(raw, dict):
        return [s for k, v in raw.items() for s in _strings(v, f"{path}.{k}")]
    return []


def _semantic_checks(raw: dict[str, Any], errors: list[str]) -> None:
    defined = {t.get("name") for t in raw.get("template_variables", []) if isinstance(t, dict)}
    for path, text in _strings(raw.get("widgets", []), "$.widgets"):
        if path.endswith(".content"):
            continue  # prose in note widgets
        for name in _TEMPLATE_USE.findall(text):
            if name not in defined:
                errors.append(f"{path}: template variable ${name} is used but not defined")
        for op in _TRACE_METRIC.findall(text):
            if op not in OPERATION_NAMES:
                errors.append(
                    f"{path}: trace metric for {op!r}, an operation the toolkit does not emit"
                )
        for op in _OPERATION.findall(text):
            op = op.strip('"')
            if op not in OPERATION_NAMES:
                errors.append(f"{path}: operation_name {op!r} is not one the toolkit emits")
        for metric in _SPAN_METRIC.findall(text):
            if metric not in span_metrics.defined():
                errors.append(
                    f"{path}: span-based metric {metric!r} is not defined in "
                    f"{span_metrics.FILE.relative_to(DASHBOARDS.parent)}"
                )
    layout = raw.get("layout_type")
    reflow = raw.get("reflow_type", "auto")
    for i, widget in enumerate(raw.get("widgets", [])):
        has_layout = isinstance(widget, dict) and "layout" in widget
        where = f"$.widgets[{i}]"
        if layout == "free" and not has_layout:
            errors.append(
                f"{where}: a free layout needs a layout (x, y, width, height) on every widget"
            )
        if layout == "ordered" and reflow == "fixed" and not has_layout:
            errors.append(f"{where}: reflow_type fixed needs a layout on every widget")
        if layout == "ordered" and reflow == "auto" and has_layout:
            errors.append(f"{where}: reflow_type auto places widgets itself; remove layout")
        if layout == "ordered" and has_layout:
            box = widget["layout"]
            if box.get("x", 0) + box.get("width", 0) > 12:
                errors.append(f"{where}.layout: x + width must be at most 12 columns")


def validate_text(text: str, name: str = "<dashboard>") -> list[str]:
    """Every problem found in one dashboard's JSON, each as ``name: path: message``."""
    from datadog_api_client import ApiClient, Configuration
    from datadog_api_client.v1.model.dashboard import Dashboard

    try:
        raw = json.loads(text)
    except ValueError as exc:
        return [f"{name}: not JSON: {exc}"]
    if not isinstance(raw, dict):
        return [f"{name}: $: a dashboard is a JSON object"]
    errors: list[str] = []
    try:
        model = ApiClient(Configuration()).deserialize(text, (Dashboard,), True)
    except (TypeError, ValueError) as exc:
        return [f"{name}: $: {exc}"]
    _walk(model, raw, "$", errors)
    _semantic_checks(raw, errors)
    return [f"{name}: {e}" for e in errors]


def validate(folder: Path = DASHBOARDS) -> list[str]:
    """The dashboards' problems, and the span-based metrics' (``metrics/``)."""
    files = sorted(folder.glob("*.json"))
    if not files:
        return [f"{folder}: no dashboard JSON files"]
    errors = [e for f in files for e in validate_text(f.read_text(), str(f))]
    metrics = folder / "metrics" / span_metrics.FILE.name
    if metrics.exists():
        errors += span_metrics.validate(metrics)
    return errors


def marker(stem: str) -> str:
    return f"(id: {stem})"


def push(folder: Path, *, api_url: str, api_key: str, app_key: str, dry_run: bool) -> list[str]:
    """Create or update each dashboard; returns what was done, one line each."""
    from datadog_api_client import ApiClient, Configuration
    from datadog_api_client.v1.api.dashboards_api import DashboardsApi
    from datadog_api_client.v1.model.dashboard import Dashboard

    config = Configuration(host=api_url)
    config.api_key["apiKeyAuth"] = api_key
    config.api_key["appKeyAuth"] = app_key
    done = []
    with ApiClient(config) as client:
        api = DashboardsApi(client)
        existing = api.list_dashboards().get("dashboards", []) or []
        for path in sorted(folder.glob("*.json")):
            text = path.read_text()
            raw = json.loads(text)
            tag = marker(path.stem)
            if tag not in raw.get("description", ""):
                raw["description"] = (raw.get("description", "") + f" {tag}").strip()
            body = client.deserialize(json.dumps(raw), (Dashboard,), True)
            match = next((d for d in existing if tag in (d.get("description") or "")), None)
            if match is None:
                if not dry_run:
                    created = api.create_dashboard(body)
                    done.append(f"created {raw['title']!r} ({created.id}) from {path.name}")
                else:
                    done.append(f"would create {raw['title']!r} from {path.name}")
            elif not dry_run:
                api.update_dashboard(match["id"], body)
                done.append(f"updated {raw['title']!r} ({match['id']}) from {path.name}")
            else:
                done.append(f"would update {raw['title']!r} ({match['id']}) from {path.name}")
        metrics = folder / "metrics" / span_metrics.FILE.name
        if metrics.exists():  # the metrics the dashboards chart, computed from all spans
            done += span_metrics.push(metrics, client, dry_run=dry_run)
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    v = sub.add_parser("validate", help="check the dashboard JSON offline")
    v.add_argument("--dir", type=Path, default=DASHBOARDS)
    p = sub.add_parser("push", help="create or update the dashboards in a Datadog org")
    p.add_argument("--dir", type=Path, default=DASHBOARDS)
    p.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    p.add_argument(
        "--api-url",
        default=None,
        help="API base URL (default https://api.$DD_SITE, DD_SITE defaulting to datadoghq.com)",
    )


def run(args: argparse.Namespace) -> int:
    errors = validate(args.dir)
    for error in errors:
        print(error)
    if args.action == "validate" or errors:
        if not errors:
            print(f"{len(list(args.dir.glob('*.json')))} dashboard(s) valid")
        return 1 if errors else 0
    api_key, app_key = os.environ.get("DD_API_KEY"), os.environ.get("DD_APP_KEY")
    if not api_key or not app_key:
        print("push needs DD_API_KEY and DD_APP_KEY")
        return 2
    url = args.api_url or f"https://api.{os.environ.get('DD_SITE', 'datadoghq.com')}"
    for line in push(args.dir, api_url=url, api_key=api_key, app_key=app_key, dry_run=args.dry_run):
        print(line)
    return 0
