"""The route table: each route declares its auth, rate-limit scope, bodies and responses.

Routes are registered from this table and the OpenAPI document is generated from the same
table, so the two cannot drift apart (a test still checks both directions).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ValidationError

from runtime.api import keys
from runtime.api.auth import authenticate_internal, authenticate_tenant, client_ip
from runtime.api.errors import ApiError, Forbidden, Invalid, NotFound
from runtime.api.principal import Scope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Auth(Enum):
    NONE = "none"  # process endpoints: health, metrics, the OpenAPI document
    PUBLIC = "public"  # widget endpoints: limited per client IP
    CREDENTIALS = "credentials"  # signup/login/refresh: the stricter per-IP login limit
    TENANT = "tenant"  # a user's access token or an API key: limited per caller
    INTERNAL = "internal"  # the gateway's service token


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth
    tag: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # Raw (non-JSON-model) response content types, e.g. the metrics text format.
    raw_content_type: str | None = None
    # Errors carry `Access-Control-Allow-Origin: <Origin>` so a page can read why it was
    # refused (the widget session endpoint, docs/architecture.md); grants nothing by itself.
    cors_errors: bool = False
    # The right an API key needs (TENANT routes); by default `read` for GET, `write` otherwise.
    scope: Scope | None = None

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def required_scope(self) -> Scope | None:
        if self.auth is not Auth.TENANT:
            return None
        if self.scope is not None:
            return self.scope
        return Scope.READ if self.method in ("GET", "HEAD") else Scope.WRITE


def _guarded(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await _authorised_call(request, route)
        except ApiError as exc:
            origin = request.headers.get("Origin")
            if route.cors_errors and origin:
                exc.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
            raise

    handle.__name__ = route.handler.__name__
    return handle


async def _authorised_call(request: web.Request, route: Route) -> web.StreamResponse:
    app = request.app
    limits = app[keys.SETTINGS].rate_limits
    limiter = app[keys.LIMITER]
    if route.auth is Auth.PUBLIC:
        await limiter.check("public", await client_ip(request), limits.public_per_minute)
    elif route.auth is Auth.CREDENTIALS:
        await limiter.check("login", await client_ip(request), limits.login_per_minute)
    elif route.auth is Auth.TENANT:
        principal = await authenticate_tenant(request)
        request[keys.PRINCIPAL] = principal
        await limiter.check("authenticated", principal.actor, limits.authenticated_per_minute)
        scope = route.required_scope
        if scope is not None and scope not in principal.scopes:
            raise Forbidden(
                f"this API key lacks the '{scope}' scope this request needs",
                code="insufficient_scope",
            )
    elif route.auth is Auth.INTERNAL:
        authenticate_internal(request)
    return await route.handler(request)


def register(app: web.Application, routes: Sequence[Route]) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, _guarded(route), name=route.operation_id)


async def read_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated into `model`; an empty body counts as `{}`."""
    raw = await request.read()
    try:
        parsed = model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise _invalid(exc) from None
    _check_storable(parsed.model_dump(), "")
    return parsed


def read_query(request: web.Request, model: type[M]) -> M:
    try:
        parsed = model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise _invalid(exc) from None
    _check_storable(parsed.model_dump(), "")
    return parsed


def text_param(request: web.Request, name: str, *, max_length: int = 200) -> str:
    """A free-text path parameter, refused (422) when PostgreSQL could not store it."""
    value = request.match_info[name]
    if len(value) > max_length:
        raise Invalid(f"{name}: at most {max_length} characters", field=name)
    _check_storable(value, name)
    return value


def _check_storable(value: object, where: str) -> None:
    """Refuse text PostgreSQL cannot hold (NUL characters, unpaired UTF-16 surrogates that
    JSON escapes can carry), naming the field, instead of failing in the database."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            raise Invalid(
                f"{where or 'body'}: contains a NUL or an unpaired surrogate character",
                field=where or None,
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            _check_storable(key, path)
            _check_storable(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}.{index}" if where else str(index))


def _invalid(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return ApiError("the request body is not valid JSON", code="invalid_json")
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    return Invalid(f"{location}: {message}" if location else message, field=location or None)


def json_response(body: BaseModel, *, status: int = 200) -> web.Response:
    return web.Response(
        body=body.model_dump_json().encode(), status=status, content_type="application/json"
    )


def uuid_param(request: web.Request, name: str, what: str) -> UUID:
    """A UUID path parameter; anything else cannot name a row, so it is a 404."""
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise NotFound(f"no such {what}") from None
