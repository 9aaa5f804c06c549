"""The check of a tool's parameter schema (runtime/api/models/tool_parameters.py): what it
accepts, what it refuses, and the message naming the place."""

from __future__ import annotations

import re
from typing import Any

import pytest

from runtime.api.models.tool_parameters import check_parameter_schema


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = _object(inner=schema)
    return schema


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {
            "type": "object",
            "description": "an order",
            "properties": {
                "number": {"type": "string", "format": "uuid", "enum": ["a", "b"]},
                "count": {"type": "integer", "minimum": 1, "maximum": 9.5, "nullable": True},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 0,
                    "maxItems": 3,
                },
            },
            "required": ["number"],
        },
        _nested(6),
    ],
)
def test_accepts_the_subset_gemini_takes(schema: dict[str, Any]) -> None:
    check_parameter_schema(schema)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "$ref": "#/x"}, "parameters: unsupported keyword(s) ['$ref']"),
        # Keywords the SDK's Schema knows but function declarations here do not take.
        ({"type": "object", "anyOf": []}, "parameters: unsupported keyword(s) ['anyOf']"),
        (_object(n={"type": "strng"}), "parameters.properties.n.type: must be one of"),
        (_object(n={"type": "STRING"}), "parameters.properties.n.type: must be one of"),
        ({}, "parameters.type: must be one of"),
        ({"type": "string"}, "parameters.type: must be 'object'"),
        (_object(n={"type": "integer", "enum": ["1"]}), "parameters.properties.n.enum: must be"),
        (_object(n={"type": "string", "enum": []}), "parameters.properties.n.enum: must be"),
        (_object(n={"type": "array"}), "parameters.properties.n.items:"),
        ({"type": "object", "required": ["x"]}, "parameters.required: must list names"),
        ({"type": "object", "properties": []}, "parameters.properties:"),
        ({"type": "object", "description": 5}, "parameters.description:"),
        (_nested(7), "parameters" + ".properties.inner" * 7 + ": nested deeper than 6 levels"),
        (_nested(300), "parameters: nested deeper than 6 levels"),
    ],
)
def test_refuses_naming_the_place(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        check_parameter_schema(schema)


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        # The hand-written check took any value for these keywords; Gemini wants each typed as
        # the SDK's Schema has it, so these are refused now.
        (_object(n={"type": "number", "minimum": "1"}), "parameters.properties.n.minimum"),
        (_object(n={"type": "number", "maximum": [1]}), "parameters.properties.n.maximum"),
        (_object(n={"type": "string", "enum": [1, 2]}), "parameters.properties.n.enum.0"),
        (_object(n={"type": "string", "nullable": "yes"}), "parameters.properties.n.nullable"),
        (_object(n={"type": "string", "format": 5}), "parameters.properties.n.format"),
        (
            _object(n={"type": "array", "items": {"type": "string"}, "minItems": 1.5}),
            "parameters.properties.n.minItems",
        ),
        ({"type": "object", "required": [1]}, "parameters.required.0"),
        # A keyword set to null is no schema Gemini reads; the old check let some through.
        (_object(n={"type": "string", "format": None}), "parameters.properties.n.format"),
        # The SDK's Python names are not JSON Schema keywords.
        (
            _object(n={"type": "array", "items": {"type": "string"}, "max_items": 3}),
            "parameters.properties.n",
        ),
    ],
)
def test_refuses_keyword_values_of_the_wrong_type(schema: dict[str, Any], where: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(where) + ":"):
        check_parameter_schema(schema)
