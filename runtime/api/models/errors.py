"""The one error body every failed request gets."""

from __future__ import annotations

from runtime.api.models.base import Out


class ErrorDetail(Out):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = None


class ErrorBody(Out):
    error: ErrorDetail
