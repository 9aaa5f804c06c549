"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from runtime.api.models.base import UNSTORABLE_CHARS
from runtime.api.routing import Auth, Route
from runtime.common.http_errors import ErrorBody

_PATH_PARAM = re.compile(r"\{([^}:]+)\}")
_REF = "#/components/schemas/{model}"
_STORABLE_JSON = "StorableJson"
# Request text: the server refuses NUL (PostgreSQL cannot store it) and strips surrounding
# whitespace before it checks a minimum length; the patterns say both.
_STORABLE = f"[^{UNSTORABLE_CHARS}]"
_EDGE = rf"[^\s{UNSTORABLE_CHARS}]"
# Keys whose values are data, not schemas: the walk below leaves them alone.
_DATA_KEYS = frozenset({"default", "examples", "enum", "const", "description", "title"})


def _text_pattern(min_length: int) -> str:
    """What a request string may be: storable, and `min_length` long once stripped."""
    if min_length <= 0:
        return f"^{_STORABLE}*$"
    if min_length == 1:
        return f"^{_STORABLE}*{_EDGE}{_STORABLE}*$"
    return rf"^\s*{_EDGE}{_STORABLE}{{{min_length - 2},}}{_EDGE}\s*$"


def _request_schema(schema: Any) -> Any:
    """A request schema made to say what the server accepts: every free-text string gets the
    pattern above, and free-form JSON objects (tool arguments, audit detail, ...) hold only
    keys and strings without NUL. Patterns a model states itself already exclude those
    characters (tests/api/test_openapi.py checks the document for it)."""
    if isinstance(schema, list):
        return [_request_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs") and isinstance(value, dict):
            # Names of properties, not keywords: a property may be called `description`.
            out[key] = {name: _request_schema(sub) for name, sub in value.items()}
        else:
            out[key] = value if key in _DATA_KEYS else _request_schema(value)
    if out.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(out):
        out["pattern"] = _text_pattern(int(out.get("minLength", 0)))
    if out.get("type") == "object" and out.get("additionalProperties") is True:
        out["propertyNames"] = {"pattern": _text_pattern(0)}
        out["additionalProperties"] = {"$ref": _REF.format(model=_STORABLE_JSON)}
    return out


def _storable_json() -> dict[str, Any]:
    ref = {"$ref": _REF.format(model=_STORABLE_JSON)}
    return {
        "description": "any JSON value whose keys and strings hold no NUL (422 otherwise)",
        "anyOf": [
            {"type": "string", "pattern": _text_pattern(0)},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "null"},
            {"type": "array", "items": ref},
            {
                "type": "object",
                "propertyNames": {"pattern": _text_pattern(0)},
                "additionalProperties": ref,
            },
        ],
    }


class _Schemas:
    """Collects component schemas, hoisting each model's nested `$defs`."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        if mode == "validation":
            schema = _request_schema(schema)
        for name, definition in schema.pop("$defs", {}).items():
            self.components.setdefault(name, definition)
        self.components.setdefault(model.__name__, schema)
        return {"$ref": _REF.format(model=model.__name__)}


def _security(route: Route) -> list[dict[str, list[str]]]:
    auth = route.auth
    if auth is Auth.TENANT:
        # OpenAPI 3.1 lets a non-OAuth scheme list the roles an operation needs: the scope an
        # API key must hold (a user's access token holds every scope).
        scope = route.required_scope
        return [{"bearer": [str(scope)] if scope is not None else []}]
    if auth is Auth.INTERNAL:
        return [{"internal": []}]
    return []


def _parameters(route: Route) -> list[dict[str, Any]]:
    # A path segment is never empty; text ones (routing.text_param) hold at most 200 storable
    # characters, ids that are not UUIDs name nothing (404).
    path_schema = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _text_pattern(1)}
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": path_schema}
        for name in _PATH_PARAM.findall(route.path)
    ]
    if route.query is not None:
        query_schema = _request_schema(route.query.model_json_schema(ref_template=_REF))
        required = set(query_schema.get("required", []))
        for name, schema in query_schema.get("properties", {}).items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": schema}
            )
    return parameters


def _responses(route: Route, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in route.responses.items():
        entry: dict[str, Any] = {"description": route.summary}
        if model is not None:
            entry["content"] = {"application/json": {"schema": schemas.ref(model, "serialization")}}
        elif route.raw_content_type is not None:
            # A raw JSON body (the OpenAPI document itself) is an object; text is a string.
            raw = (
                {"type": "object"}
                if route.raw_content_type == "application/json"
                else {"type": "string"}
            )
            entry["content"] = {route.raw_content_type: {"schema": raw}}
        responses[str(status)] = entry
    if route.body is not None or route.query is not None:
        responses["422"] = {
            "description": "the request breaks a rule: one this document states as a schema, "
            "or one it states in words (a description: e.g. `expires_at` in the future); "
            "`error.field` names the field",
            "content": {"application/json": {"schema": schemas.ref(ErrorBody, "serialization")}},
        }
    # Every other status carries the one error shape.
    responses["default"] = {
        "description": "an error: stable code, message, and the field for validation errors",
        "content": {"application/json": {"schema": schemas.ref(ErrorBody, "serialization")}},
    }
    if route.auth in (Auth.PUBLIC, Auth.CREDENTIALS, Auth.TENANT):
        responses["429"] = {
            "description": "rate limited; retry after the given seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": schemas.ref(ErrorBody, "serialization")}},
        }
    return responses


_DESCRIPTION = """\
The API of one OrbisVoice install. Tenant operations take `Authorization: Bearer` with a
user's access token (from `POST /api/v1/auth/login`) or an API key. Errors have one shape,
`{"error": {"code", "message", "field", "request_id"}}`; a request that breaks a rule is 422
with `field` naming it.

Strings are Unicode text: no NUL character (the patterns say so), and no unpaired UTF-16
surrogate (a `\\ud800` escape without its pair is no character, RFC 8259 section 8.2); both
are refused with 422. Surrounding whitespace is stripped (passwords excepted) before lengths
are checked.
"""


def build_document(routes: Sequence[Route], *, version: str) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
            "security": _security(route),
            "responses": _responses(route, schemas),
        }
        parameters = _parameters(route)
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": bool(route.body.model_json_schema().get("required")),
                "content": {"application/json": {"schema": schemas.ref(route.body, "validation")}},
            }
        if route.required_scope is not None:
            operation["description"] = (
                f"An API key needs the `{route.required_scope}` scope (403 "
                "`insufficient_scope` otherwise); a user's access token holds every scope."
            )
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OrbisVoice API",
            "version": version,
            "description": _DESCRIPTION,
        },
        "paths": paths,
        "components": {
            "schemas": {**schemas.components, _STORABLE_JSON: _storable_json()},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a user's access token (JWT) or an API key (ov_…). "
                    "API keys hold scopes: `read` (GET on tenant resources), `write` "
                    "(change them), `keys` (manage API keys); each operation lists the one "
                    "it needs. A user's access token holds all three.",
                },
                "internal": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the internal service token (gateway → api)",
                },
            },
        },
    }
