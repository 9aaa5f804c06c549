"""The API's domain errors, and its error middleware: the shared one (runtime/common/http_errors.py)
that also answers a database outage as `503 database_unavailable`."""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import PoolTimeout

from runtime.common.http_errors import HttpError, json_error_middleware

log = logging.getLogger("runtime.api")


class ApiError(HttpError):
    """What a handler raises to refuse a request; the subclasses are the statuses it uses."""


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


def _database_unavailable(exc: Exception) -> HttpError | None:
    if not isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return None
    log.warning("database unavailable", exc_info=exc)
    return Unavailable(
        "the database is unavailable; retry shortly",
        code="database_unavailable",
        headers={"Retry-After": "5"},
    )


error_middleware = json_error_middleware(log, translate=_database_unavailable)
