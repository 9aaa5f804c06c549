"""Agents and their tools."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from runtime.api.models.base import In, Out, finite_json
from runtime.api.models.tool_parameters import MAX_DEPTH, check_parameter_schema

# An origin as browsers send it: scheme, host, optional port; no path.
ORIGIN_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$"
Origin = Annotated[str, Field(pattern=ORIGIN_PATTERN, max_length=300)]
_TOOL_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class ToolIn(In):
    name: str = Field(pattern=_TOOL_NAME)
    description: str = Field(min_length=1, max_length=1000)
    url: str = Field(pattern=r"^https?://[^\s\x00]+$", max_length=2000)
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema, the subset Gemini function declarations accept (422 "
        "otherwise): keywords type, description, enum (on strings), items, properties, "
        "required, format, nullable, minimum, maximum, minItems, maxItems; an object at the "
        f"top, nested at most {MAX_DEPTH} levels",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=30)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        finite_json(value)
        check_parameter_schema(value)
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
