"""Referrals (when enabled): the org's code, its rewards ledger, and payouts (audit-logged).

Rewards are credited at signup when the new org names a referral code."""

from __future__ import annotations

from aiohttp import web

from runtime.api import audit, keys
from runtime.api.errors import Conflict, NotFound
from runtime.api.models.referrals import PayoutOut, ReferralSummary, RewardOut
from runtime.api.routing import Auth, Route, json_response


def _require_enabled(request: web.Request) -> None:
    if not request.app[keys.SETTINGS].referrals_enabled:
        raise NotFound("referrals are not enabled on this install", code="referrals_disabled")


async def referral_summary(request: web.Request) -> web.Response:
    _require_enabled(request)
    principal = request[keys.PRINCIPAL]
    async with request.app[keys.DB].transaction() as tx:
        org = await tx.one("SELECT referral_code FROM orgs WHERE id = %s", (principal.org_id,))
        rows = await tx.all(
            "SELECT id, referred_org_id, amount_cents, payout_id, created_at "
            "FROM referral_rewards WHERE org_id = %s ORDER BY created_at, id",
            (principal.org_id,),
        )
    assert org is not None
    rewards = [RewardOut.model_validate(row) for row in rows]
    return json_response(
        ReferralSummary(
            code=org["referral_code"],
            rewards=rewards,
            unpaid_cents=sum(r.amount_cents for r in rewards if r.payout_id is None),
            paid_cents=sum(r.amount_cents for r in rewards if r.payout_id is not None),
        )
    )


async def create_payout(request: web.Request) -> web.Response:
    """Pay out every unpaid reward at once (the money moves outside this system)."""
    _require_enabled(request)
    principal = request[keys.PRINCIPAL]
    async with request.app[keys.DB].transaction() as tx:
        unpaid = await tx.all(
            "SELECT id, amount_cents FROM referral_rewards "
            "WHERE org_id = %s AND payout_id IS NULL FOR UPDATE",
            (principal.org_id,),
        )
        if not unpaid:
            raise Conflict("there are no unpaid rewards", code="nothing_to_pay")
        total = sum(int(row["amount_cents"]) for row in unpaid)
        payout = await tx.one(
            "INSERT INTO referral_payouts (org_id, amount_cents) VALUES (%s, %s) "
            "RETURNING id, amount_cents, created_at",
            (principal.org_id, total),
        )
        assert payout is not None
        await tx.execute(
            "UPDATE referral_rewards SET payout_id = %s WHERE id = ANY(%s)",
            (payout["id"], [row["id"] for row in unpaid]),
        )
        await audit.append_by(
            tx,
            principal,
            action="referral.payout",
            target=f"payout:{payout['id']}",
            detail={"amount_cents": total, "rewards": len(unpaid)},
        )
    return json_response(PayoutOut.model_validate({**payout, "rewards": len(unpaid)}), status=201)


ROUTES = [
    Route(
        "GET",
        "/api/v1/referrals",
        referral_summary,
        "The org's referral code and rewards ledger",
        Auth.TENANT,
        "referrals",
        {200: ReferralSummary},
    ),
    Route(
        "POST",
        "/api/v1/referrals/payouts",
        create_payout,
        "Pay out all unpaid rewards",
        Auth.TENANT,
        "referrals",
        {201: PayoutOut},
    ),
]
