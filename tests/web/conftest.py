"""Browser-test fixtures: a trusted test CA, a TLS nginx serving runtime/web, Chromium."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.services import PostgresServer, RedisServer
from tests.web import netns
from tests.web.flows import TenantShop
from tests.web.netns import CHROMIUM, BrowserNetwork
from tests.web.stack import Stack, running_stack
from tests.web.support import (
    ARTIFACTS,
    Nginx,
    TlsFiles,
    Upstreams,
    chromium_args,
    install_nginx,
    make_speech_wav,
    make_tls,
    tenant_nginx,
    trusting_home,
)

PAGES = Path(__file__).parent / "pages"


@pytest.fixture(scope="session")
def web_tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="orbis-web-") as name:
        yield Path(name)


@pytest.fixture(scope="session")
def tls(web_tmp: Path) -> TlsFiles:
    (web_tmp / "tls").mkdir()
    return make_tls(web_tmp / "tls")


@pytest.fixture(scope="session")
def speech_wav(web_tmp: Path) -> Path:
    return make_speech_wav(
        web_tmp / "speech.wav", "Hello, I would like to know your opening hours please."
    )


@pytest.fixture(scope="session")
def browser_network(web_tmp: Path) -> Iterator[BrowserNetwork]:
    if not netns.available():
        yield BrowserNetwork(None)
        return
    with netns.isolated_network(web_tmp, CHROMIUM) as isolated:
        yield BrowserNetwork(isolated)


@pytest.fixture(scope="session")
def static_nginx(tls: TlsFiles, browser_network: BrowserNetwork) -> Iterator[Nginx]:
    """The install's nginx serving runtime/web, with no API or gateway behind it."""
    with install_nginx(tls, Upstreams()) as server:
        yield browser_network.expose(server)


@pytest.fixture(scope="session")
def tenant_pages(web_tmp: Path) -> Path:
    """The tenants' web root: tests/web/pages, plus pages the tests write."""
    return Path(shutil.copytree(PAGES, web_tmp / "tenant-pages"))


@pytest.fixture(scope="session")
def tenant_site(
    tls: TlsFiles, tenant_pages: Path, browser_network: BrowserNetwork
) -> Iterator[Nginx]:
    """Tenants' websites on shop.orbis.test (allowed) and elsewhere.orbis.test (not)."""
    with tenant_nginx(tls, tenant_pages) as server:
        yield browser_network.expose(server)


@pytest.fixture(scope="session")
def stack(
    pg_server: PostgresServer,
    redis_srv: RedisServer,
    tls: TlsFiles,
    browser_network: BrowserNetwork,
) -> Iterator[Stack]:
    """API, gateway and emulator processes behind the install's nginx."""
    with running_stack(pg_server, redis_srv, tls) as running:
        browser_network.expose(running.nginx)
        yield running


@pytest.fixture(scope="session")
def tenant_login(stack: Stack) -> dict[str, str]:
    """A signed-up organisation: its owner's email, password and access token."""
    email = f"owner-{secrets.token_hex(4)}@shop.example.com"
    password = secrets.token_urlsafe(16)
    result = stack.api(
        "POST",
        "/api/v1/auth/signup",
        {"org_name": "Shop Example", "email": email, "password": password},
    )
    return {"email": email, "password": password, "token": result["access_token"]}


@pytest.fixture(scope="session")
def shop(
    stack: Stack, tenant_site: Nginx, tenant_pages: Path, tenant_login: dict[str, str]
) -> TenantShop:
    """The signed-up tenant's website, where the tests embed the widget."""
    return TenantShop(stack, tenant_site, tenant_pages, tenant_login["token"])


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser_home(web_tmp: Path, tls: TlsFiles) -> Path:
    """HOME for Chromium: its NSS database trusts the test CA."""
    return trusting_home(web_tmp / "home", tls.ca_cert)


@pytest.fixture(scope="session")
def browser(
    playwright: Playwright, browser_home: Path, speech_wav: Path, browser_network: BrowserNetwork
) -> Iterator[Browser]:
    home = browser_home
    browser = playwright.chromium.launch(
        executable_path=browser_network.executable,
        args=chromium_args(speech_wav),
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    yield browser
    browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    yield page
    # Every browser test leaves a screenshot of where it ended, pass or fail.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
