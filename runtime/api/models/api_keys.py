"""API keys: what a tenant asks for and what it is shown."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import Field, field_validator

from runtime.api.models.base import In, Out
from runtime.api.principal import Scope


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
