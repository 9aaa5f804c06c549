"""Referral rewards and their payouts."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from runtime.api.models.base import Out


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
