"""Who is calling: a tenant's user (JWT) or one of its API keys, and what it may do."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Scope(enum.StrEnum):
    """An API key's rights (docs/architecture.md). A user's access token holds all of them."""

    READ = "read"  # GET on tenant resources
    WRITE = "write"  # creating, changing and deleting tenant resources
    KEYS = "keys"  # listing, creating and revoking API keys


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class Principal:
    org_id: str
    user_id: str | None = None
    api_key_id: str | None = None
    scopes: frozenset[Scope] = field(default=ALL_SCOPES)
    # An API key's expiry (None: it does not expire, or the caller is a user).
    expires_at: datetime | None = None

    @property
    def actor(self) -> str:
        """How the audit log and the rate limiter name this caller."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return f"api_key:{self.api_key_id}"
