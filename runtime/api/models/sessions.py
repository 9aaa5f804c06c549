"""Calls (sessions), their transcripts, and an end user's data (GDPR export and erasure)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import Field

from runtime.api.models.base import In, Out

# A position in the session listing: the last call's start (microseconds since the epoch) and
# id. Any string of this form is a position, so what the schema allows the server accepts.
CURSOR_PATTERN = r"^[0-9]{1,16}-[0-9a-f]{32}$"


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
