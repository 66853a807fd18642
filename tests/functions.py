"""Load the Todo API's Lambda functions as a fresh execution environment would."""

from __future__ import annotations

import importlib
import json
import sys
from types import ModuleType
from typing import Any

from tests.lambda_events import LambdaContext, http_event

_loaded: list[ModuleType] = []


def load(name: str) -> ModuleType:
    """Import ``handlers.insert`` or ``handlers.select`` anew: init runs again (a cold start)."""
    sys.modules.pop(name, None)
    module = importlib.import_module(name)
    _loaded.append(module)
    return module


def close_all() -> None:
    while _loaded:
        module = _loaded.pop()
        database = getattr(module, "database", None)
        if database is not None:
            database.close()


def call(
    module: ModuleType, method: str, path: str, body: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Invoke the function with a Function URL event; returns the response, body decoded."""
    raw = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    result = module.handler(http_event(method, path, body=raw, **kwargs), LambdaContext())
    response = dict(result)
    if "body" in response:
        response["json"] = json.loads(response["body"])
    return response
