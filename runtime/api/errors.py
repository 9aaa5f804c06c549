"""Domain errors and the one middleware that turns every failure into the JSON error shape.

Shape (docs/architecture.md): `{"error": {"code", "message", "field"?, "request_id"?}}`.
`code` is stable and machine-readable; `message` is for humans; `field` names the offending
input for validation errors. A client never sees a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiohttp import web
from psycopg_pool import PoolTimeout

from runtime.common.logs import request_id_var

log = logging.getLogger("runtime.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.field = field
        self.headers = headers or {}


class Invalid(ApiError):
    status = 422
    code = "validation_error"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    request_id = request_id_var.get()
    if request_id:
        error["request_id"] = request_id
    return web.json_response({"error": error}, status=status, headers=headers)


# aiohttp's own HTTP exceptions (unknown route, wrong method, body too large) by status.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(
            exc.status, exc.code, exc.message, field=exc.field, headers=exc.headers
        )
    except (psycopg.OperationalError, PoolTimeout):
        log.warning("database unavailable", exc_info=True)
        return error_response(
            503,
            "database_unavailable",
            "the database is unavailable; retry shortly",
            headers={"Retry-After": "5"},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, exc.reason, headers=headers)
    except Exception:
        log.exception("unhandled error", extra={"fields": {"path": request.path}})
        return error_response(
            500, "internal_error", "internal error; quote the request id when reporting it"
        )
