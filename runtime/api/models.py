"""Request and response bodies (pydantic); the OpenAPI document is generated from these."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from runtime.api.principal import Scope

# An origin as browsers send it: scheme, host, optional port; no path.
ORIGIN_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$"
# PostgreSQL text cannot hold NUL: requests refuse it (routing.py) and the OpenAPI document's
# patterns exclude it (openapi.py), as a regex class body. Unpaired UTF-16 surrogates (a JSON
# `\ud800` escape without its pair) are refused too, but are no Unicode text at all (RFC 8259
# 8.2, I-JSON): a pattern cannot name them (Rust-based validators refuse such a pattern, and
# schemathesis then drops it), so the document says so in words (openapi.py).
UNSTORABLE_CHARS = r"\x00"
# One pattern in the OpenAPI document and in the check.
_EMAIL_CHAR = rf"[^@\s{UNSTORABLE_CHARS}]"
EMAIL_PATTERN = rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}+\.{_EMAIL_CHAR}+$"
_EMAIL = re.compile(EMAIL_PATTERN)
# A position in the session listing: the last call's start (microseconds since the epoch) and
# id. Any string of this form is a position, so what the schema allows the server accepts.
CURSOR_PATTERN = r"^[0-9]{1,16}-[0-9a-f]{32}$"
_TOOL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# Parameter schemas use the subset of JSON Schema that Gemini function declarations accept.
_SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_SCHEMA_KEYS = {
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
_MAX_SCHEMA_DEPTH = 6
# PostgreSQL bigint: larger numbers would fail in the database instead of in validation.
_BIGINT_MAX = 2**63 - 1


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


Origin = Annotated[str, Field(pattern=ORIGIN_PATTERN, max_length=300)]
Email = Annotated[
    str,
    Field(
        min_length=3,
        max_length=254,
        description="an email address (compared case-insensitively)",
        json_schema_extra={"format": "email", "pattern": EMAIL_PATTERN},
    ),
]
# Passwords are taken exactly as typed (the models strip other text).
Password = Annotated[str, StringConstraints(strip_whitespace=False, min_length=10, max_length=200)]


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    """JSON stored as jsonb: numbers like 1e400 parse to infinity, which jsonb cannot hold."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError("numbers must be finite") from None
    return value


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("is not an email address")
    return value.lower()


# --- errors, health -----------------------------------------------------------------------


class ErrorDetail(Out):
    code: str
    message: str
    field: str | None = None
    request_id: str | None = None


class ErrorBody(Out):
    error: ErrorDetail


class Health(Out):
    status: Literal["ok"]


class Readiness(Out):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


class ApiIndex(Out):
    name: str
    version: str
    openapi: str = Field(description="the OpenAPI 3.1 document")
    docs: str = Field(description="the reference, as a page to read")
    agents: str = Field(description="the agents resource (each agent has its embed snippet)")
    widget: str = Field(description="the widget script the embed snippets load")


# --- auth ---------------------------------------------------------------------------------


class SignupIn(In):
    org_name: str = Field(min_length=1, max_length=200)
    email: Email
    password: Password
    referral_code: str | None = Field(
        default=None,
        min_length=4,
        max_length=40,
        description="another org's referral code (with referrals on, an unknown one is 422)",
    )

    _email = field_validator("email")(_check_email)


class LoginIn(In):
    email: Email
    password: Annotated[
        str, StringConstraints(strip_whitespace=False, min_length=1, max_length=200)
    ]

    _email = field_validator("email")(_check_email)


class RefreshIn(In):
    refresh_token: str = Field(min_length=1, max_length=200)


class OrgOut(Out):
    id: UUID
    name: str
    referral_code: str
    created_at: datetime


class UserOut(Out):
    id: UUID
    email: str
    role: str
    created_at: datetime


class TokensOut(Out):
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a scheme name, not a secret
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_at: datetime


class AuthOut(TokensOut):
    org: OrgOut
    user: UserOut


class MeOut(Out):
    org: OrgOut
    user: UserOut | None
    api_key_id: UUID | None
    scopes: list[Scope] = Field(description="what the caller may do (a user: every scope)")


# --- agents -------------------------------------------------------------------------------


def check_parameter_schema(schema: Any, where: str = "parameters", depth: int = 0) -> None:
    """Raise ValueError unless `schema` is in the JSON-Schema subset Gemini accepts."""
    if depth > _MAX_SCHEMA_DEPTH:
        raise ValueError(f"{where}: nested deeper than {_MAX_SCHEMA_DEPTH} levels")
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: must be a JSON object")  # noqa: TRY004 - pydantic wants ValueError
    unknown = set(schema) - _SCHEMA_KEYS
    if unknown:
        raise ValueError(f"{where}: unsupported keyword(s) {sorted(unknown)}")
    kind = schema.get("type")
    if kind not in _SCHEMA_TYPES:
        raise ValueError(f"{where}.type: must be one of {sorted(_SCHEMA_TYPES)}")
    if "description" in schema and not isinstance(schema["description"], str):
        raise ValueError(f"{where}.description: must be a string")
    if "enum" in schema and not (
        isinstance(schema["enum"], list) and schema["enum"] and kind == "string"
    ):
        raise ValueError(f"{where}.enum: must be a non-empty list on a string")
    if kind == "array":
        check_parameter_schema(schema.get("items"), f"{where}.items", depth + 1)
    if kind == "object":
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError(f"{where}.properties: must be an object")
        for name, sub in properties.items():
            check_parameter_schema(sub, f"{where}.properties.{name}", depth + 1)
        required = schema.get("required", [])
        if not isinstance(required, list) or not set(required) <= set(properties):
            raise ValueError(f"{where}.required: must list names from properties")


class ToolIn(In):
    name: str = Field(pattern=_TOOL_NAME)
    description: str = Field(min_length=1, max_length=1000)
    url: str = Field(pattern=r"^https?://[^\s\x00]+$", max_length=2000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema, the subset Gemini function declarations accept (422 "
        "otherwise): keywords type, description, enum (on strings), items, properties, "
        "required, format, nullable, minimum, maximum, minItems, maxItems; an object at the "
        "top, nested at most 6 levels",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=30)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        _finite_json(value)
        check_parameter_schema(value)
        if value.get("type") != "object":
            raise ValueError("parameters.type: must be 'object'")
        return value


def _unique_tools(tools: list[ToolIn] | None) -> list[ToolIn] | None:
    if tools is not None:
        names = [tool.name for tool in tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
    return tools


_TOOLS = "the functions the model may call; names unique (422 otherwise)"
_LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_MODEL = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$"


class AgentIn(In):
    name: str = Field(min_length=1, max_length=200)
    instructions: str = Field(min_length=1, max_length=20000)
    voice: str = Field(default="Puck", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,49}$")
    language: str = Field(default="en-US", pattern=_LANGUAGE)
    model: str | None = Field(default=None, pattern=_MODEL)
    greeting: str = Field(default="", max_length=1000)
    max_session_seconds: int = Field(default=600, ge=30, le=7200)
    max_concurrent_calls: int = Field(default=10, ge=1, le=1000)
    tools: list[ToolIn] = Field(default_factory=list, max_length=32, description=_TOOLS)
    allowed_origins: list[Origin] = Field(default_factory=list, max_length=50)

    _tools = field_validator("tools")(_unique_tools)


def _not_null_in_schema(schema: dict[str, Any]) -> None:
    """Omitted means unchanged; the document shows no `default: null` that reads as allowed."""
    schema.pop("default", None)


class AgentPatch(In):
    """Partial update: only the fields present change. `null` puts a field back to its
    default (what creating the agent without it gives: `model: null` clears the override,
    `tools: null` removes every tool); `name` and `instructions` have none and cannot be null."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | SkipJsonSchema[None] = (
        Field(default=None, json_schema_extra=_not_null_in_schema)
    )
    instructions: (
        Annotated[str, StringConstraints(min_length=1, max_length=20000)] | SkipJsonSchema[None]
    ) = Field(default=None, json_schema_extra=_not_null_in_schema)
    voice: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,49}$")
    language: str | None = Field(default=None, pattern=_LANGUAGE)
    model: str | None = Field(default=None, pattern=_MODEL)
    greeting: str | None = Field(default=None, max_length=1000)
    max_session_seconds: int | None = Field(default=None, ge=30, le=7200)
    max_concurrent_calls: int | None = Field(default=None, ge=1, le=1000)
    tools: list[ToolIn] | None = Field(default=None, max_length=32, description=_TOOLS)
    allowed_origins: list[Origin] | None = Field(default=None, max_length=50)

    _tools = field_validator("tools")(_unique_tools)

    @model_validator(mode="after")
    def _no_null_without_default(self) -> AgentPatch:
        for name in self.model_fields_set & {"name", "instructions"}:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields to set: those present, a `null` replaced by the field's default."""
        values = self.model_dump(include=self.model_fields_set)
        for name, value in values.items():
            if value is None:
                values[name] = AgentIn.model_fields[name].get_default(call_default_factory=True)
        return values


class ToolOut(Out):
    name: str
    description: str
    url: str
    parameters: dict[str, Any]
    timeout_seconds: float


class AgentOut(Out):
    id: UUID
    public_id: str
    name: str
    instructions: str
    voice: str
    language: str
    model: str | None
    greeting: str
    max_session_seconds: int
    max_concurrent_calls: int
    tools: list[ToolOut]
    allowed_origins: list[str]
    webhook_secret: str = Field(
        description="signs this agent's tool webhook calls (X-Orbis-Signature, HMAC-SHA256)"
    )
    embed_snippet: str = Field(
        description="the `<script>` tag that puts this agent's call button on a page (add "
        "`data-user=\"ID\"` for the site's own visitor id); the page's origin must be in "
        "`allowed_origins`"
    )
    created_at: datetime
    updated_at: datetime


class AgentList(Out):
    items: list[AgentOut]


# --- widget -------------------------------------------------------------------------------


class WidgetConfigOut(Out):
    public_id: str
    name: str
    greeting: str
    voice: str
    language: str


class WidgetSessionIn(In):
    end_user_id: str | None = Field(default=None, min_length=1, max_length=200)


class WidgetSessionOut(Out):
    token: str
    expires_at: datetime
    gateway_url: str


# --- internal (gateway → api) -------------------------------------------------------------


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

    _arguments = field_validator("arguments")(_finite_json)


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
    prompt_tokens: int = Field(default=0, ge=0, le=_BIGINT_MAX)
    response_tokens: int = Field(default=0, ge=0, le=_BIGINT_MAX)
    total_tokens: int = Field(default=0, ge=0, le=_BIGINT_MAX)


class CallEndIn(In):
    duration_ms: int = Field(ge=0, le=_BIGINT_MAX)
    end_reason: str = Field(min_length=1, max_length=100)
    usage: UsageIn = Field(default_factory=UsageIn)


class AuditEventIn(In):
    action: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    actor: str = Field(default="operator", min_length=1, max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict)

    _detail = field_validator("detail")(_finite_json)


# --- API keys -----------------------------------------------------------------------------


class ApiKeyIn(In):
    name: str = Field(min_length=1, max_length=200)
    expires_at: datetime | None = Field(
        default=None,
        description="when the key stops working: in the future (422 otherwise); a key "
        "creating a key: at most its own expiry, and its own expiry when omitted",
    )
    scopes: list[Scope] = Field(
        default_factory=lambda: [Scope.READ, Scope.WRITE],
        min_length=1,
        max_length=len(Scope),
        description="read: GET on tenant resources; write: change them; keys: manage API "
        "keys. A key creating a key can grant only scopes it holds itself.",
    )

    @field_validator("scopes")
    @classmethod
    def _distinct_scopes(cls, values: list[Scope]) -> list[Scope]:
        return sorted(set(values))


class ApiKeyOut(Out):
    id: UUID
    name: str
    prefix: str
    scopes: list[Scope]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="the secret; shown only in this response")


class ApiKeyList(Out):
    items: list[ApiKeyOut]


# --- sessions, transcripts, GDPR ----------------------------------------------------------


class SessionQuery(In):
    agent_id: UUID | None = None
    end_user_id: str | None = Field(default=None, min_length=1, max_length=200)
    status: Literal["active", "ended"] | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    q: str | None = Field(
        default=None,
        min_length=3,
        max_length=200,
        description="only calls whose transcript contains this text (case-insensitive, "
        "at least 3 characters); each item then carries the first matching line as `match`",
    )
    limit: int = Field(default=50, ge=1, le=200)
    cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="where the page starts: the previous page's `next_cursor`, passed as it "
        "came (any string of this form names a position in the listing)",
    )


class UsageOut(Out):
    prompt_tokens: int | None
    response_tokens: int | None
    total_tokens: int | None


class SessionOut(Out):
    id: UUID
    agent_id: UUID
    origin: str
    end_user_id: str | None
    instance_id: str
    started_at: datetime
    ended_at: datetime | None
    duration_ms: int | None
    end_reason: str | None
    usage: UsageOut


class SessionListItem(SessionOut):
    match: str | None = Field(
        default=None, description="with `q`: the first transcript line containing it"
    )


class SessionList(Out):
    items: list[SessionListItem]
    next_cursor: str | None


class SegmentOut(Out):
    seq: int
    role: str
    text: str
    at: datetime


class SessionDetail(SessionOut):
    transcript: list[SegmentOut]


class EndUserExport(Out):
    end_user_id: str
    exported_at: datetime
    sessions: list[SessionDetail]


class EndUserErased(Out):
    end_user_id: str
    sessions_erased: int
    segments_erased: int


# --- audit --------------------------------------------------------------------------------


class AuditQuery(In):
    limit: int = Field(default=100, ge=1, le=500)
    before_seq: int | None = Field(default=None, ge=1, le=_BIGINT_MAX)


class AuditEntryOut(Out):
    seq: int
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    created_at: datetime
    prev_hash: str
    hash: str


class AuditList(Out):
    items: list[AuditEntryOut]


class AuditVerifyOut(Out):
    ok: bool
    entries: int
    broken_at_seq: int | None
    reason: str | None


# --- referrals ----------------------------------------------------------------------------


class RewardOut(Out):
    id: UUID
    referred_org_id: UUID
    amount_cents: int
    payout_id: UUID | None
    created_at: datetime


class ReferralSummary(Out):
    code: str
    rewards: list[RewardOut]
    unpaid_cents: int
    paid_cents: int


class PayoutOut(Out):
    id: UUID
    amount_cents: int
    rewards: int
    created_at: datetime
