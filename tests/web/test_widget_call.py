"""A visitor's call through the widget on a tenant's page, end to end in Chromium:
page -> nginx TLS -> API (session) -> gateway (WebSocket) -> emulator (Gemini Live), and back.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.web.stack import Stack
from tests.web.support import ARTIFACTS, STRANGER_HOST, TENANT_HOST, Nginx, goto

pytestmark = pytest.mark.browser

CALL_TIMEOUT_MS = 30_000


def embed_page(pages: Path, name: str, *, stack: Stack, agent: str) -> str:
    """A tenant page with the one-line embed, a strict CSP, and CSS hostile to widgets."""
    install = stack.public_url
    wss = install.replace("https://", "wss://")
    csp = (
        f"default-src 'self'; script-src 'self' {install}; connect-src {install} {wss}; "
        "style-src 'self'"
    )
    (pages / name).write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">
<title>Shop Example</title>
<link rel="stylesheet" href="hostile.css">
</head><body>
<h1>Shop Example</h1>
<p>Our products.</p>
<script src="{install}/widget.js" data-agent="{html.escape(agent)}" async></script>
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


def test_call_on_an_allowed_origin_plays_audio_shows_captions_and_stores_the_transcript(
    page: Page,
    stack: Stack,
    tenant_site: Nginx,
    tenant_pages: Path,
    tenant_login: dict[str, str],
) -> None:
    agent = create_agent(stack, tenant_login["token"], [tenant_site.origin(TENANT_HOST)])
    name = embed_page(tenant_pages, "shop.html", stack=stack, agent=agent["public_id"])
    goto(page, tenant_site.url(TENANT_HOST, f"/{name}"))

    host = widget(page)
    expect(host).to_have_attribute("data-orbis-config", "loaded")
    launcher = host.locator(".launcher")
    # The page's hostile CSS (hiding every button, red everything) does not reach the widget.
    expect(launcher).to_be_visible()
    expect(launcher).to_have_attribute("aria-label", "Talk to Shop helper")
    launcher.click()

    wait_for(page, "w.dataset.orbisState === 'live'")
    call_id = host.get_attribute("data-orbis-call-id")
    assert call_id
    # The emulator hears the speech WAV, answers with 1.2 s of audio and transcriptions.
    wait_for(page, "Number(w.dataset.orbisBytesPlayed || 0) >= 24000 * 2 * 0.5")
    captions = host.locator(".captions li")
    expect(captions.filter(has_text="Hello there.")).to_have_attribute("data-role", "user")
    expect(captions.filter(has_text="Hi! How can I help?")).to_have_attribute("data-role", "agent")
    assert int(host.get_attribute("data-orbis-bytes-sent") or 0) > 16000 * 2  # > 1 s of mic
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "widget-live-call.png")

    host.locator(".action").click()  # "End call"
    expect(host).to_have_attribute("data-orbis-state", "ended")
    expect(host.locator(".status")).to_have_text("Call ended")

    # The gateway stores the transcript through the API as the call ends.
    with psycopg.connect(stack.database_conninfo) as conn:
        rows: list[tuple[str, str]] = []
        for _ in range(100):
            rows = conn.execute(
                "SELECT role, text FROM transcript_segments WHERE call_id = %s ORDER BY seq",
                (call_id,),
            ).fetchall()
            ended = conn.execute(
                "SELECT end_reason FROM calls WHERE id = %s", (call_id,)
            ).fetchone()
            if rows and ended and ended[0]:
                break
            page.wait_for_timeout(100)
    assert ("user", "Hello there.") in rows
    assert ("agent", "Hi! How can I help?") in rows
    assert ended is not None
    assert ended[0] == "hangup"


def test_a_page_on_an_origin_the_agent_does_not_allow_gets_a_clear_refusal(
    page: Page,
    stack: Stack,
    tenant_site: Nginx,
    tenant_pages: Path,
    tenant_login: dict[str, str],
) -> None:
    agent = create_agent(stack, tenant_login["token"], [tenant_site.origin(TENANT_HOST)])
    name = embed_page(tenant_pages, "elsewhere.html", stack=stack, agent=agent["public_id"])
    goto(page, tenant_site.url(STRANGER_HOST, f"/{name}"))

    host = widget(page)
    host.locator(".launcher").click()
    expect(host).to_have_attribute("data-orbis-state", "origin-not-allowed")
    expect(host).to_have_attribute("data-orbis-error", "origin_not_allowed")
    expect(host.locator(".status")).to_have_text("This voice agent is not enabled on this website.")
    expect(host.locator(".action")).to_have_text("Call again")
    # No call was started for the refused page.
    with psycopg.connect(stack.database_conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM calls WHERE agent_id = %s", (agent["id"],)
        ).fetchone()
    assert row == (0,)
