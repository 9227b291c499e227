"""JSON schemas of store rows, from the columns themselves (names, types, NULL-ability): what the REST API's
reference says a row it returns holds, kept in step with the schema by construction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column

_JSON_TYPES = {int: "integer", str: "string", bool: "boolean", float: "number"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def column_schema(columns: list[Column[Any]]) -> dict[str, Any]:
    """A JSON object schema for rows of these case-store columns (their names, types and NULL-ability)."""
    props: dict[str, Any] = {}
    for col in columns:
        try:
            kind = {"type": _JSON_TYPES.get(col.type.python_type, "string")}
        except NotImplementedError:  # a type without a Python equivalent (JSON): any value
            kind = {}
        props[col.name] = _nullable(kind) if col.nullable and kind else kind
    return {"type": "object", "required": [c.name for c in columns], "properties": props}
