"""Referrals: attribution at signup, rewards ledger, payouts (audit-logged), feature flag."""

from __future__ import annotations

import pytest

from tests.api.fixtures import PASSWORD, ApiHarness, start_api

pytestmark = pytest.mark.integration


async def test_disabled_by_default(api: ApiHarness) -> None:
    tenant = await api.signup()
    status, body = await api.call("GET", "/api/v1/referrals", headers=tenant.headers)
    assert (status, body["error"]["code"]) == (404, "referrals_disabled")


async def test_referral_reward_and_payout(api: ApiHarness) -> None:
    async with start_api(api.settings.model_copy(update={"referrals_enabled": True})) as ref_api:
        referrer = await ref_api.signup()
        _, summary = await ref_api.call(
            "GET", "/api/v1/referrals", headers=referrer.headers, expect=200
        )
        code = summary["code"]
        status, body = await ref_api.call(
            "POST",
            "/api/v1/auth/signup",
            json={
                "org_name": "B",
                "email": "b@example.com",
                "password": PASSWORD,
                "referral_code": "NOSUCHCODE",
            },
        )
        assert (status, body["error"]["field"]) == (422, "referral_code")
        await ref_api.call(
            "POST",
            "/api/v1/auth/signup",
            json={
                "org_name": "B",
                "email": "b@example.com",
                "password": PASSWORD,
                "referral_code": code.lower(),
            },
            expect=201,
        )
        _, summary = await ref_api.call(
            "GET", "/api/v1/referrals", headers=referrer.headers, expect=200
        )
        assert (summary["unpaid_cents"], summary["paid_cents"]) == (1000, 0)
        _, payout = await ref_api.call(
            "POST", "/api/v1/referrals/payouts", headers=referrer.headers, expect=201
        )
        assert (payout["amount_cents"], payout["rewards"]) == (1000, 1)
        status, body = await ref_api.call(
            "POST", "/api/v1/referrals/payouts", headers=referrer.headers
        )
        assert (status, body["error"]["code"]) == (409, "nothing_to_pay")
        _, summary = await ref_api.call(
            "GET", "/api/v1/referrals", headers=referrer.headers, expect=200
        )
        assert (summary["unpaid_cents"], summary["paid_cents"]) == (0, 1000)
        _, log = await ref_api.call("GET", "/api/v1/audit", headers=referrer.headers, expect=200)
        assert [e["action"] for e in log["items"]][:2] == ["referral.payout", "referral.reward"]
        # Another org sees only its own (empty) ledger.
        other = await ref_api.signup()
        _, theirs = await ref_api.call(
            "GET", "/api/v1/referrals", headers=other.headers, expect=200
        )
        assert theirs["rewards"] == [] and theirs["code"] != code
