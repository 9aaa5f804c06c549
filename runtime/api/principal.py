"""Who is calling: a tenant's user (JWT) or one of its API keys."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    org_id: str
    user_id: str | None = None
    api_key_id: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log and the rate limiter name this caller."""
        if self.user_id is not None:
            return f"user:{self.user_id}"
        return f"api_key:{self.api_key_id}"
