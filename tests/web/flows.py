"""Steps shared by the browser tests: tenant pages with the embed, agents, waiting on the widget."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page

from tests.web.stack import Stack

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
