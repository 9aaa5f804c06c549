"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from runtime.api.models import ErrorBody
from runtime.api.routing import Auth, Route

_PATH_PARAM = re.compile(r"\{([^}:]+)\}")
_REF = "#/components/schemas/{model}"


class _Schemas:
    """Collects component schemas, hoisting each model's nested `$defs`."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
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
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    if route.query is not None:
        query_schema = route.query.model_json_schema(ref_template=_REF)
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
            entry["content"] = {route.raw_content_type: {"schema": {"type": "string"}}}
        responses[str(status)] = entry
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
        "info": {"title": "OrbisVoice API", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
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
