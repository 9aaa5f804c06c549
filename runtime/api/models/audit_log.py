"""The audit log: its pages and the check of its hash chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from runtime.api.models.base import BIGINT_MAX, In, Out


class AuditQuery(In):
    limit: int = Field(default=100, ge=1, le=500)
    before_seq: int | None = Field(default=None, ge=1, le=BIGINT_MAX)


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
