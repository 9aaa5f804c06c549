"""What the embedded widget reads and the call tokens it gets."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from runtime.api.models.base import In, Out


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
