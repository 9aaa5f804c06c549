"""Client of the API's internal endpoints (docs/architecture.md, "Internal API")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from runtime.common.http_errors import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)


class ToolSpec(BaseModel):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


class AgentRuntime(BaseModel):
    id: str
    public_id: str
    org_id: str
    name: str
    instructions: str = ""
    voice: str | None = None
    language: str | None = None
    model: str | None = None
    greeting: str | None = None
    max_session_seconds: int | None = None
    tools: list[ToolSpec] = []
    allowed_origins: list[str] = []
    max_concurrent_calls: int | None = None
    org_max_concurrent_calls: int | None = None


class CallGrant(BaseModel):
    call_id: str
    org_id: str
    agent: AgentRuntime


class ApiRejected(Exception):
    """The API refused the request with a stable error code (e.g. token_invalid)."""

    def __init__(self, status: int, error: ErrorDetail) -> None:
        # The request id finds the API's log lines of the refusal.
        super().__init__(f"{status} {error.code}: {error.message} (request {error.request_id})")
        self.status = status
        self.code = error.code


class ApiUnavailable(Exception):
    """The API could not be reached or answered with a server error."""


class InternalApi:
    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, *, timeout: float
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    async def _post(
        self, path: str, body: dict[str, Any], *, timeout_seconds: float
    ) -> tuple[int, Any]:
        try:
            async with self._session.post(
                f"{self._base_url}{path}",
                json=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            ) as response:
                payload: Any = None
                if response.status != 204:
                    try:
                        payload = await response.json(content_type=None)
                    except ValueError:
                        payload = None
                return response.status, payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnavailable(f"POST {path}: {type(exc).__name__}: {exc}") from exc

    async def redeem_call(self, *, token: str, origin: str, instance_id: str) -> CallGrant:
        """Exchange a widget session token for a call (never retried: the token is single-use)."""
        status, payload = await self._post(
            "/internal/calls",
            {"token": token, "origin": origin, "instance_id": instance_id},
            timeout_seconds=self._timeout,
        )
        if status == 201:
            try:
                return CallGrant.model_validate(payload)
            except ValidationError as exc:
                raise ApiUnavailable(f"POST /internal/calls: malformed answer: {exc}") from exc
        if status in (400, 401, 403, 404, 409, 410, 429):
            raise _refusal("/internal/calls", status, payload)
        raise ApiUnavailable(f"POST /internal/calls: HTTP {status}")

    async def execute_tool(
        self, *, call_id: str, name: str, arguments: dict[str, Any], timeout_seconds: float
    ) -> dict[str, Any]:
        """The API's tool outcome: {"ok": true, "result": …} or {"ok": false, "error": {…}}."""
        try:
            status, payload = await self._post(
                "/internal/tools/execute",
                {"call_id": call_id, "name": name, "arguments": arguments},
                timeout_seconds=timeout_seconds,
            )
        except ApiUnavailable as exc:
            code = "tool_timeout" if isinstance(exc.__cause__, TimeoutError) else "tool_unavailable"
            return {"ok": False, "error": {"code": code, "message": "the tool could not be run"}}
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("ok"), bool):
            return payload
        error = _error_of(payload)
        return {
            "ok": False,
            "error": {
                "code": error.code if error is not None else "tool_unavailable",
                "message": f"the tool endpoint answered HTTP {status}",
            },
        }

    async def post_transcript(self, call_id: str, segments: list[dict[str, Any]]) -> None:
        await self._post_idempotent(
            f"/internal/calls/{call_id}/transcript", {"segments": segments}, attempts=1
        )

    async def end_call(
        self, call_id: str, *, duration_ms: int, end_reason: str, usage: dict[str, int]
    ) -> None:
        await self._post_idempotent(
            f"/internal/calls/{call_id}/end",
            {"duration_ms": duration_ms, "end_reason": end_reason, "usage": usage},
            attempts=4,
        )

    async def _post_idempotent(self, path: str, body: dict[str, Any], *, attempts: int) -> None:
        """POST an idempotent request, retrying transport and 5xx failures with backoff."""
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                status, payload = await self._post(path, body, timeout_seconds=self._timeout)
            except ApiUnavailable:
                if attempt == attempts:
                    raise
            else:
                if status < 300:
                    return
                if status < 500:
                    # A 4xx will not change on retry: report it and stop.
                    raise _refusal(path, status, payload)
                if attempt == attempts:
                    raise ApiUnavailable(f"POST {path}: HTTP {status}")
            await asyncio.sleep(delay)
            delay = min(delay * 3, 5.0)


def _error_of(payload: Any) -> ErrorDetail | None:
    """The error of an answer in the API's one error shape; None for any other answer."""
    try:
        return ErrorBody.model_validate(payload).error
    except ValidationError:
        return None


def _refusal(path: str, status: int, payload: Any) -> ApiRejected | ApiUnavailable:
    """A 4xx answer: the API's refusal when in its error shape; in any other shape it came
    from something else (a proxy, a wrong ORBIS_API_URL), an upstream error."""
    error = _error_of(payload)
    if error is None:
        return ApiUnavailable(
            f"POST {path}: HTTP {status} without the API's error shape; "
            "is ORBIS_API_URL the API's address?"
        )
    return ApiRejected(status, error)
