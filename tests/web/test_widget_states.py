"""Widget states that need no call to be set up: a blocked microphone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, expect

from tests.web.netns import BrowserNetwork
from tests.web.support import ARTIFACTS, INSTALL_HOST, TENANT_HOST, Nginx, chromium_args, goto

pytestmark = pytest.mark.browser


@pytest.fixture
def mic_blocking_browser(
    playwright: Playwright, browser_home: Path, speech_wav: Path, browser_network: BrowserNetwork
) -> Iterator[Browser]:
    """Chromium whose permission prompts are answered "Block", as a visitor may do."""
    args = [arg for arg in chromium_args(speech_wav) if arg != "--use-fake-ui-for-media-stream"]
    browser = playwright.chromium.launch(
        executable_path=browser_network.executable,
        args=[*args, "--deny-permission-prompts"],
        env={"HOME": str(browser_home), "PATH": "/usr/bin:/bin"},
    )
    yield browser
    browser.close()


def test_a_blocked_microphone_says_how_to_fix_it(
    mic_blocking_browser: Browser,
    static_nginx: Nginx,
    tenant_site: Nginx,
    tenant_pages: Path,
) -> None:
    (tenant_pages / "mic.html").write_text(
        "<!doctype html><html><head><title>t</title></head><body>"
        f'<script src="{static_nginx.origin(INSTALL_HOST)}/widget.js" data-agent="agt_any">'
        "</script></body></html>"
    )
    page = mic_blocking_browser.new_page()
    goto(page, tenant_site.url(TENANT_HOST, "/mic.html"))
    host = page.locator("orbis-voice-widget")
    host.locator(".launcher").click()

    expect(host).to_have_attribute("data-orbis-state", "mic-denied")
    expect(host.locator(".status")).to_have_text(
        "Microphone access was blocked. Allow the microphone for this site and try again."
    )
    expect(host.locator(".action")).to_have_text("Call again")
    # Nothing was sent anywhere: the session is only requested once the microphone is on.
    assert host.get_attribute("data-orbis-bytes-sent") == "0"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "widget-mic-denied.png")
    page.close()
