"""The internal API's bodies (gateway → api): a call's start, tool calls, transcript, end, and
audit events from the operator's tools."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import Field, field_validator

from runtime.api.models.base import BIGINT_MAX, In, Out, finite_json


class CallStartIn(In):
    token: str = Field(min_length=1, max_length=200)
    origin: str = Field(min_length=1, max_length=300)
    instance_id: str = Field(min_length=1, max_length=200)


class RuntimeToolOut(Out):
    name: str
    description: str
    parameters: dict[str, Any]


class AgentRuntime(Out):
    id: UUID
    public_id: str
    org_id: UUID
    name: str
    instructions: str
    voice: str
    language: str
    model: str | None
    greeting: str
    max_session_seconds: int
    tools: list[RuntimeToolOut]
    allowed_origins: list[str]
    max_concurrent_calls: int
    org_max_concurrent_calls: int


class CallStartOut(Out):
    call_id: UUID
    org_id: UUID
    agent: AgentRuntime


class ToolExecuteIn(In):
    call_id: UUID
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] = Field(default_factory=dict)

    _arguments = field_validator("arguments")(finite_json)


class ToolError(Out):
    code: str
    message: str


class ToolResultOut(Out):
    ok: bool
    result: Any = None
    error: ToolError | None = None


class SegmentIn(In):
    seq: int = Field(ge=0, le=2**31 - 1)
    role: Literal["user", "agent"]
    text: str = Field(max_length=20000)
    at: datetime


class TranscriptIn(In):
    segments: list[SegmentIn] = Field(min_length=1, max_length=500)


class UsageIn(In):
    prompt_tokens: int = Field(default=0, ge=0, le=BIGINT_MAX)
    response_tokens: int = Field(default=0, ge=0, le=BIGINT_MAX)
    total_tokens: int = Field(default=0, ge=0, le=BIGINT_MAX)


class CallEndIn(In):
    duration_ms: int = Field(ge=0, le=BIGINT_MAX)
    end_reason: str = Field(min_length=1, max_length=100)
    usage: UsageIn = Field(default_factory=UsageIn)


class AuditEventIn(In):
    action: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    actor: str = Field(default="operator", min_length=1, max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict)

    _detail = field_validator("detail")(finite_json)
