"""The JSON Schema of a tool's parameters, as Gemini function declarations accept it.

google-genai's `types.Schema` is the SDK's model of that schema: it knows every keyword by its
JSON name and the type of its value (`minimum` a number, `enum` a list of strings, `items` a
schema, ...) and refuses keywords it does not know. The API accepts a subset of those keywords
and adds the rules the SDK leaves to the service: a known type, spelled as JSON Schema spells
it (the gateway sends the schema as `parametersJsonSchema`; the SDK also takes `STRING` and,
with a warning, any unknown name); `enum` only on strings; `items` on arrays; `required` naming
properties; no `null` keyword values; a bounded depth.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from google.genai import types
from pydantic import ValidationError

TYPES = ("array", "boolean", "integer", "number", "object", "string")
KEYWORDS = frozenset(
    {
        "type",
        "description",
        "enum",
        "items",
        "properties",
        "required",
        "format",
        "nullable",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
    }
)
MAX_DEPTH = 6


def check_parameter_schema(parameters: dict[str, Any]) -> None:
    """Raise ValueError, naming the place (`parameters.properties.city.type: ...`), unless
    `parameters` is an object schema in the subset Gemini function declarations accept."""
    try:
        # The SDK warns of each type name it does not know; the check below refuses those.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # Strict and by JSON name only: `"minimum": "5"` or `max_items` are not coerced
            # into what the SDK would send: the schema is stored and sent as the tenant wrote it.
            types.Schema.model_validate_json(
                json.dumps(parameters), strict=True, by_alias=True, by_name=False
            )
    except ValidationError as exc:
        raise ValueError(_sdk_refusal(exc)) from None
    _check_subset(parameters, "parameters", depth=0)
    if parameters["type"] != "object":
        raise ValueError("parameters.type: must be 'object'")


def _sdk_refusal(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        # The text is json.dumps' own: only its nesting, past the parser's limit, is refused.
        return f"parameters: nested deeper than {MAX_DEPTH} levels"
    where = _path(first["loc"])
    if first["type"] == "extra_forbidden":
        parent, _, keyword = where.rpartition(".")
        return f"{parent}: unsupported keyword(s) {[keyword]}"
    return f"{where}: {first['msg']}"


def _path(loc: Sequence[int | str]) -> str:
    return ".".join(["parameters", *(str(part) for part in loc)])


def _check_subset(schema: dict[str, Any], where: str, *, depth: int) -> None:
    """The rules beyond the SDK's model; `schema` has passed that model, so each keyword's
    value already has its type (or is null)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    unsupported = set(schema) - KEYWORDS
    if unsupported:
        raise ValueError(f"{where}: unsupported keyword(s) {sorted(unsupported)}")
    for keyword, value in schema.items():
        if value is None:
            raise ValueError(f"{where}.{keyword}: may not be null")
    kind = schema.get("type")
    if kind not in TYPES:
        raise ValueError(f"{where}.type: must be one of {list(TYPES)}")
    if "enum" in schema and not (schema["enum"] and kind == "string"):
        raise ValueError(f"{where}.enum: must be a non-empty list on a string")
    if kind == "array":
        if "items" not in schema:
            raise ValueError(f"{where}.items: an array needs the schema of its items")
        _check_subset(schema["items"], f"{where}.items", depth=depth + 1)
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        for name, sub in properties.items():
            _check_subset(sub, f"{where}.properties.{name}", depth=depth + 1)
        if not set(schema.get("required", [])) <= set(properties):
            raise ValueError(f"{where}.required: must list names from properties")
