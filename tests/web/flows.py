"""Steps shared by the browser tests: tenant pages with the embed, agents, waiting on the widget."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from playwright.sync_api import Locator, Page, expect

from tests.web.stack import Stack
from tests.web.support import TENANT_HOST, Nginx, goto

CALL_TIMEOUT_MS = 30_000


def embed_page(pages: Path, name: str, *, stack: Stack, agent: str, user: str | None = None) -> str:
    """A tenant page with the one-line embed, a strict CSP (with Trusted Types), and CSS
    hostile to widgets."""
    user_attribute = f' data-user="{html.escape(user)}"' if user else ""
    install = stack.public_url
    wss = install.replace("https://", "wss://")
    csp = (
        f"default-src 'self'; script-src 'self' {install}; connect-src {install} {wss}; "
        "style-src 'self'; require-trusted-types-for 'script'"
    )
    (pages / name).write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">
<title>Shop Example</title>
<link rel="stylesheet" href="hostile.css">
</head><body>
<h1>Shop Example</h1>
<p>Our products.</p>
<script src="{install}/widget.js" data-agent="{html.escape(agent)}"{user_attribute} async>
</script>
</body></html>
""")
    return name


def create_agent(stack: Stack, token: str, origins: list[str], **fields: Any) -> dict[str, Any]:
    body = {
        "name": "Shop helper",
        "instructions": "You help visitors of Shop Example.",
        "greeting": "Hello!",
        "allowed_origins": origins,
        **fields,
    }
    agent: dict[str, Any] = stack.api("POST", "/api/v1/agents", body, token=token)
    return agent


def widget(page: Page) -> Locator:
    return page.locator("orbis-voice-widget")


def wait_for(page: Page, condition: str, timeout: int = CALL_TIMEOUT_MS) -> None:
    """Waits for a condition on the widget's host element (`w`)."""
    page.wait_for_function(
        f"() => {{ const w = document.querySelector('orbis-voice-widget'); return w && ({condition}); }}",
        timeout=timeout,
    )


def start_call(page: Page, host: Locator) -> str:
    """Clicks the widget's launcher and waits for the call to be live; returns the call id."""
    host.locator(".launcher").click()
    wait_for(page, "w.dataset.orbisState === 'live'")
    call_id = host.get_attribute("data-orbis-call-id")
    assert call_id
    return call_id


def end_call(host: Locator) -> None:
    """The visitor hangs up ("End call") and the widget says the call ended."""
    host.locator(".action").click()
    expect(host).to_have_attribute("data-orbis-state", "ended")


def serving_instance(stack: Stack, call_id: str) -> str:
    """The id of the gateway replica that serves the call."""
    with psycopg.connect(stack.database_conninfo) as conn:
        row = conn.execute("SELECT instance_id FROM calls WHERE id = %s", (call_id,)).fetchone()
    assert row is not None
    return str(row[0])


@dataclass(frozen=True)
class TenantShop:
    """A tenant's website (its own nginx and pages) and the tenant's login on the install."""

    stack: Stack
    site: Nginx
    pages: Path
    token: str

    def create_agent(self, **fields: Any) -> dict[str, Any]:
        """An agent of the tenant that allows the shop's own origin."""
        return create_agent(self.stack, self.token, [self.site.origin(TENANT_HOST)], **fields)

    def open_embed(
        self, page: Page, name: str, agent: str, *, user: str | None = None, host: str = TENANT_HOST
    ) -> Locator:
        """Writes a shop page embedding the widget for `agent`, opens it on `host`; returns
        the widget."""
        embed_page(self.pages, name, stack=self.stack, agent=agent, user=user)
        return self.visit(page, name, host)

    def visit(self, page: Page, name: str, host: str = TENANT_HOST) -> Locator:
        """Opens an existing shop page; returns its widget."""
        goto(page, self.site.url(host, f"/{name}"))
        return widget(page)
