"""The Todo model and the validation of what clients send."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import uuid
from dataclasses import dataclass
from typing import Any

from handlers.http import bad_request

__all__ = [
    "DESCRIPTION_MAX",
    "LIMIT_DEFAULT",
    "LIMIT_MAX",
    "NAME_MAX",
    "NewTodo",
    "Page",
    "Todo",
    "TodoChanges",
    "decode_cursor",
    "encode_cursor",
    "iso",
    "parse_id",
]


NAME_MAX = 200
DESCRIPTION_MAX = 2000
LIMIT_DEFAULT = 10
LIMIT_MAX = 100
_CREATE_FIELDS = {"name", "description", "completed"}
_QUERY_PARAMS = {"limit", "cursor"}


@dataclass(frozen=True)
class Todo:
    id: uuid.UUID
    name: str
    description: str | None
    completed: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": self.description,
            "completed": self.completed,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def iso(moment: datetime.datetime) -> str:
    """UTC, ISO 8601, microseconds, ``Z``."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(body: dict[str, Any], field: str, limit: int, *, required: bool) -> str | None:
    if field not in body:
        if required:
            raise bad_request(f"{field} is required", field=field, code="missing_field")
        return None
    value = body[field]
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a string", field=field, code="invalid_type")
    if required and not value:
        raise bad_request(f"{field} must not be empty", field=field, code="invalid_value")
    if len(value) > limit:
        raise bad_request(
            f"{field} is longer than {limit} characters", field=field, code="too_long"
        )
    if "\x00" in value:
        raise bad_request(
            f"{field} must not contain NUL characters", field=field, code="invalid_value"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(
            f"{field} contains an unpaired surrogate", field=field, code="invalid_value"
        ) from None
    return value


def _reject_unknown(names: Any, allowed: set[str], what: str, code: str) -> None:
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise bad_request(
            f"unknown {what} {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}",
            field=unknown[0],
            code=code,
        )


def _unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    _reject_unknown(body, allowed, "field", "unknown_field")


@dataclass(frozen=True)
class NewTodo:
    """A validated ``POST /todos`` body."""

    name: str
    description: str | None
    completed: bool

    @classmethod
    def parse(cls, body: dict[str, Any]) -> NewTodo:
        _unknown_fields(body, _CREATE_FIELDS)
        name = _text(body, "name", NAME_MAX, required=True)
        assert name is not None
        completed = body.get("completed", False)
        if not isinstance(completed, bool):
            raise bad_request(
                "completed must be true or false", field="completed", code="invalid_type"
            )
        return cls(name, _text(body, "description", DESCRIPTION_MAX, required=False), completed)


@dataclass(frozen=True)
class TodoChanges:
    """A validated ``PATCH /todos/{id}`` body: only the fields it names change."""

    values: dict[str, Any]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> TodoChanges:
        _unknown_fields(body, _CREATE_FIELDS)
        if not body:
            raise bad_request(
                "nothing to change: give name, description or completed", code="missing_field"
            )
        values: dict[str, Any] = {}
        if "name" in body:
            values["name"] = _text(body, "name", NAME_MAX, required=True)
        if "description" in body:
            values["description"] = _text(body, "description", DESCRIPTION_MAX, required=False)
        if "completed" in body:
            if not isinstance(body["completed"], bool):
                raise bad_request(
                    "completed must be true or false", field="completed", code="invalid_type"
                )
            values["completed"] = body["completed"]
        return cls(values)


def parse_id(raw: str) -> uuid.UUID | None:
    """The todo id in a path, or None when it cannot be one (answered as 404)."""
    try:
        value = uuid.UUID(raw)
    except ValueError:
        return None
    return value if str(value) == raw.lower() else None


@dataclass(frozen=True)
class Page:
    """``GET /todos`` parameters: how many, and where the previous page ended."""

    limit: int
    after: tuple[datetime.datetime, uuid.UUID] | None

    @classmethod
    def parse(cls, query: dict[str, str]) -> Page:
        _unknown_params(query)
        raw_limit = query.get("limit")
        limit = LIMIT_DEFAULT
        if raw_limit is not None:
            if not raw_limit.isascii() or not raw_limit.isdigit():
                raise bad_request("limit must be a whole number from 1 to 100", field="limit")
            limit = int(raw_limit)
            if not 1 <= limit <= LIMIT_MAX:
                raise bad_request("limit must be a whole number from 1 to 100", field="limit")
        cursor = query.get("cursor")
        return cls(limit, decode_cursor(cursor) if cursor is not None else None)


def _unknown_params(query: dict[str, str]) -> None:
    _reject_unknown(query, _QUERY_PARAMS, "query parameter", "unknown_parameter")


def encode_cursor(todo: Todo) -> str:
    """An opaque cursor pointing just after ``todo`` in newest-first order."""
    raw = json.dumps([todo.created_at.isoformat(), str(todo.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime.datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, todo_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        moment = datetime.datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, uuid.UUID(todo_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise bad_request(
            "cursor is not one this API returned", field="cursor", code="invalid_cursor"
        ) from None
