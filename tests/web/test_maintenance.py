"""While the service is away for a moment (nginx's maintenance flag: a restore's switch), the
widget and the dashboard say "back in a moment", wait as Retry-After asks, and carry on by
themselves once it is back (issue 14, "an honest, short maintenance window")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.web.flows import CALL_TIMEOUT_MS, TenantShop, end_call, wait_for
from tests.web.stack import Stack
from tests.web.support import goto

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def maintenance(flag: Path) -> Iterator[None]:
    flag.touch()
    try:
        yield
    finally:
        flag.unlink(missing_ok=True)


def test_a_call_started_during_maintenance_waits_and_then_goes_live(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent()
    host = shop.open_embed(page, "maintenance.html", agent["public_id"])
    expect(host).to_have_attribute("data-orbis-config", "loaded")
    with maintenance(stack.nginx.maintenance_flag):
        host.locator(".launcher").click()
        expect(host).to_have_attribute("data-orbis-state", "back-soon")
        expect(host.locator(".status")).to_have_text("Back in a moment — waiting for the service…")
        # Still an active call: the visitor can hang up while it waits.
        expect(host.locator(".action")).to_have_text("End call")
    wait_for(page, "w.dataset.orbisState === 'live'", timeout=CALL_TIMEOUT_MS)
    assert host.get_attribute("data-orbis-call-id")
    end_call(host)


def test_the_dashboard_says_back_in_a_moment_and_loads_when_back(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    goto(page, f"{stack.public_url}/dashboard/")
    form = page.locator("#login-form")
    form.get_by_label("Email").fill(tenant_login["email"])
    form.get_by_label("Password").fill(tenant_login["password"])
    with maintenance(stack.nginx.maintenance_flag):
        form.get_by_role("button", name="Log in").click()
        expect(page.locator("#notice")).to_have_text(
            "Back in a moment — the service is briefly unavailable. Retrying…"
        )
    # The login was sent again by itself, and the notice went with the maintenance.
    expect(page.get_by_role("heading", name="Agents")).to_be_visible(timeout=15_000)
    expect(page.locator("#notice")).to_be_hidden()
