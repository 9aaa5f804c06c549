"""The one JSON error shape of the API and the gateway, and the one middleware that makes it.

Shape (docs/architecture.md, "HTTP errors"): `{"error": {"code", "message", "field"?,
"request_id"}}`. `code` is stable and machine-readable; `message` is for humans; `field` names
the offending input of a validation error; `request_id` is the `X-Request-Id` of the answer,
the id every log line written while serving the request carries (logs.request_id_middleware).
A client never sees a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel

from runtime.common.logs import REQUEST_ID_HEADER, new_request_id, request_id_var


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    request_id: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class HttpError(Exception):
    """An error a handler raises to answer with its status in the error shape."""

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


# Turns a failure of a service's own dependency (the API's database) into an HttpError;
# None leaves it an unhandled error (500).
Translate = Callable[[Exception], HttpError | None]


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The error shape with the current request's id; outside a request (an HTTP request too
    malformed to reach the middlewares) a fresh id, so body and header still agree."""
    request_id = request_id_var.get() or new_request_id()
    body = ErrorBody(
        error=ErrorDetail(code=code, message=message, field=field, request_id=request_id)
    )
    return web.json_response(
        body.model_dump(exclude_none=True),
        status=status,
        headers={**(headers or {}), REQUEST_ID_HEADER: request_id},
    )


def _answer(error: HttpError) -> web.Response:
    return error_response(
        error.status, error.code, error.message, field=error.field, headers=error.headers
    )


# aiohttp's own HTTP exceptions (unknown route, wrong method, body too large) by status.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def json_error_middleware(log: logging.Logger, *, translate: Translate | None = None) -> Middleware:
    """The middleware that answers every failure of a handler in the error shape; it runs
    inside `request_id_middleware`, whose id the answers carry."""

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return _answer(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(exc.status, code, exc.reason, headers=headers)
        except Exception as exc:
            if request.writer.output_size > 0:
                # A response is under way (an upgraded WebSocket): no answer can replace it,
                # so aiohttp logs the failure and drops the connection.
                raise
            known = translate(exc) if translate is not None else None
            if known is not None:
                return _answer(known)
            log.exception("unhandled error", extra={"fields": {"path": request.path}})
            return error_response(
                500, "internal_error", "internal error; quote the request id when reporting it"
            )

    return error_middleware
