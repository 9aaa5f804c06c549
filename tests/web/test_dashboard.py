"""The tenant dashboard in Chromium, served by the install's nginx (with its CSP), on the real API."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Locator, Page, expect

from tests.web.flows import CALL_TIMEOUT_MS, TenantShop, create_agent, end_call, widget
from tests.web.stack import Stack
from tests.web.support import ARTIFACTS, TENANT_HOST, Nginx, goto

pytestmark = pytest.mark.browser


def log_in(page: Page, stack: Stack, login: dict[str, str]) -> None:
    goto(page, f"{stack.public_url}/dashboard/")
    form = page.locator("#login-form")
    form.get_by_label("Email").fill(login["email"])
    form.get_by_label("Password").fill(login["password"])
    form.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Agents")).to_be_visible()


def csp_violations(page: Page) -> list[str]:
    found: list[str] = []

    def check(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.append(message.text)

    page.on("console", check)
    return found


def test_log_in_create_an_agent_and_copy_a_working_snippet(
    page: Page,
    context: BrowserContext,
    stack: Stack,
    tenant_site: Nginx,
    tenant_pages: Path,
    tenant_login: dict[str, str],
) -> None:
    violations = csp_violations(page)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.public_url)
    goto(page, f"{stack.public_url}/dashboard/")
    form = page.locator("#login-form")
    form.get_by_label("Email").fill(tenant_login["email"])
    form.get_by_label("Password").fill("not the password")
    form.get_by_role("button", name="Log in").click()
    expect(page.locator("#notice")).to_have_text("Wrong email or password.")

    log_in(page, stack, tenant_login)
    page.get_by_role("link", name="New agent").click()
    agent_form = page.locator("#agent-form")
    agent_form.get_by_label("Name", exact=True).fill("Front desk")
    agent_form.get_by_label("Instructions").fill("Answer questions about opening hours.")
    agent_form.get_by_label("Greeting").fill("Welcome to Shop Example!")
    agent_form.get_by_label("Voice").select_option("Kore")
    agent_form.get_by_label("Allowed origins").fill(tenant_site.origin(TENANT_HOST))
    agent_form.get_by_role("button", name="Save agent").click()
    expect(page.locator("#notice")).to_have_text("Agent saved.")
    expect(page.get_by_role("heading", name="Front desk")).to_be_visible()

    agents = stack.api("GET", "/api/v1/agents", token=tenant_login["token"])["items"]
    agent = next(item for item in agents if item["name"] == "Front desk")
    assert agent["voice"] == "Kore"
    assert agent["allowed_origins"] == [tenant_site.origin(TENANT_HOST)]
    snippet = (
        f'<script src="{stack.public_url}/widget.js" data-agent="{agent["public_id"]}" '
        "async></script>"
    )
    expect(page.locator("#snippet")).to_have_text(snippet)
    page.get_by_role("button", name="Copy snippet").click()
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == snippet
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-agent.png", full_page=True)

    # The agent list shows it; editing changes it.
    page.get_by_role("link", name="Agents").click()
    row = page.locator("#agents-body tr", has_text="Front desk")
    expect(row).to_contain_text(agent["public_id"])
    row.get_by_role("link", name="Front desk").click()
    page.locator("#agent-form").get_by_label("Greeting").fill("Hello again!")
    page.locator("#agent-form").get_by_role("button", name="Save agent").click()
    expect(page.locator("#notice")).to_have_text("Agent saved.")
    updated = stack.api("GET", f"/api/v1/agents/{agent['id']}", token=tenant_login["token"])
    assert updated["greeting"] == "Hello again!"

    # The copied snippet, pasted into the tenant's page, brings up the agent's widget.
    (tenant_pages / "pasted.html").write_text(
        f"<!doctype html><html><head><title>t</title></head><body>{copied}</body></html>"
    )
    tenant_page = context.new_page()
    goto(tenant_page, tenant_site.url(TENANT_HOST, "/pasted.html"))
    host = tenant_page.locator("orbis-voice-widget")
    expect(host).to_have_attribute("data-orbis-config", "loaded")
    expect(host.locator(".launcher")).to_have_attribute("aria-label", "Talk to Front desk")
    tenant_page.close()
    assert violations == []


def test_keys_are_shown_once_and_can_be_revoked(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    violations = csp_violations(page)
    log_in(page, stack, tenant_login)
    page.get_by_role("link", name="API keys").click()
    page.locator("#key-form").get_by_label("Name").fill("CRM sync")
    page.locator("#key-form").get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-value")).to_have_text(re.compile(r"^ov_\S{20,}$"))
    secret = page.locator("#new-key-value").inner_text()
    row = page.locator("#keys-body tr", has_text="CRM sync")
    expect(row).to_contain_text("active")
    # The key works against the API...
    assert stack.api("GET", "/api/v1/me", token=secret)["api_key_id"]
    # ...and is never shown again.
    page.reload()
    expect(page.locator("#keys-body tr", has_text="CRM sync")).to_be_visible()
    expect(page.locator("#new-key")).to_be_hidden()
    assert secret not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#keys-body tr", has_text="CRM sync").get_by_role("button", name="Revoke").click()
    expect(page.locator("#keys-body tr", has_text="CRM sync")).to_contain_text("revoked")
    with pytest.raises(Exception, match="401"):
        stack.api("GET", "/api/v1/me", token=secret)
    assert violations == []


def call_until_greeted(host: Locator) -> str:
    """Starts a call and waits until the emulated agent has answered the visitor's greeting
    (its only agent caption); returns the call id."""
    host.locator(".launcher").click()
    expect(host).to_have_attribute("data-orbis-state", "live", timeout=CALL_TIMEOUT_MS)
    expect(host.locator(".captions li[data-role=agent]")).to_have_text(
        "Hi! How can I help?", timeout=CALL_TIMEOUT_MS
    )
    call_id = host.get_attribute("data-orbis-call-id")
    assert call_id
    return call_id


def wait_until_ended(stack: Stack, token: str, call_id: str) -> dict[str, object]:
    """The gateway records the end of a call just after the socket closes."""
    for _ in range(100):
        call: dict[str, object] = stack.api("GET", f"/api/v1/sessions/{call_id}", token=token)
        if call["end_reason"]:
            return call
        time.sleep(0.1)
    raise AssertionError(f"call {call_id} was never recorded as ended")


def test_a_test_call_from_the_dashboard_then_its_transcript_found_by_search(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    violations = csp_violations(page)
    token = tenant_login["token"]
    agent = stack.api(
        "POST",
        "/api/v1/agents",
        {"name": "Test line", "instructions": "Be brief.", "allowed_origins": []},
        token=token,
    )
    log_in(page, stack, tenant_login)
    goto(page, f"{stack.public_url}/dashboard/#/agents/{agent['id']}")
    hint = page.locator("#test-origin-hint")
    expect(hint).to_contain_text(f"add {stack.public_url} to the allowed origins")
    hint.get_by_role("button", name="Add it now").click()
    expect(hint).to_be_hidden()
    page.get_by_role("button", name="Start a test call").click()

    host = widget(page)
    call_id = call_until_greeted(host)
    end_call(host)
    assert wait_until_ended(stack, token, call_id)["end_reason"] == "hangup"

    # A full page (50) of newer calls of another agent pushes the test call off the first
    # page: the search must find it through the API, not among the calls listed.
    busy = stack.api(
        "POST",
        "/api/v1/agents",
        {"name": "Busy line", "instructions": "Be brief.", "allowed_origins": []},
        token=token,
    )
    with psycopg.connect(stack.database_conninfo) as conn:
        conn.execute(
            "INSERT INTO calls (org_id, agent_id, origin, instance_id, started_at, ended_at,"
            " end_reason) SELECT org_id, id, 'https://busy.example', 'seed',"
            " now() + make_interval(secs => n), now() + make_interval(secs => n), 'hangup'"
            " FROM agents, generate_series(1, 50) AS n WHERE id = %s",
            (busy["id"],),
        )

    page.get_by_role("link", name="Transcripts").click()
    expect(page.locator("#sessions-body tr", has_text="Busy line")).to_have_count(50)
    row = page.locator("#sessions-body tr", has_text="Test line")
    expect(row).to_have_count(0)
    search = page.locator("#transcript-filter")
    search.get_by_label("Search words").fill("how can I HELP")
    with page.expect_request(re.compile(r"/api/v1/sessions\?.*q=how")):
        search.get_by_role("button", name="Search").click()
    expect(row).to_contain_text("Hi! How can I help?")  # the matching line
    expect(row).to_contain_text("hangup")
    expect(row).to_contain_text(stack.public_url)
    expect(page.locator("#sessions-body tr")).to_have_count(1)
    search.get_by_label("Search words").fill("weather in Paris")
    search.get_by_role("button", name="Search").click()
    expect(page.locator("#sessions-empty")).to_be_visible()
    expect(row).to_have_count(0)

    search.get_by_label("Search words").fill("hello THERE")
    search.get_by_role("button", name="Search").click()
    expect(row).to_contain_text("Hello there.")
    row.get_by_role("link").click()
    segments = page.locator("#segments li")
    expect(segments.filter(has_text="Hello there.")).to_contain_text("Visitor")
    expect(segments.filter(has_text="Hi! How can I help?")).to_contain_text("Agent")
    expect(page.locator("#call-facts")).to_contain_text("hangup")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-transcript.png", full_page=True)
    assert violations == []


def test_gdpr_export_then_erase_an_end_users_calls(
    page: Page,
    context: BrowserContext,
    stack: Stack,
    shop: TenantShop,
    tenant_login: dict[str, str],
) -> None:
    token = tenant_login["token"]
    agent = shop.create_agent()
    # A visitor the tenant's site knows as "visitor-42" makes a call.
    visitor = context.new_page()
    host = shop.open_embed(visitor, "account.html", agent["public_id"], user="visitor-42")
    call_id = call_until_greeted(host)
    end_call(host)
    visitor.close()
    assert wait_until_ended(stack, token, call_id)["end_user_id"] == "visitor-42"

    log_in(page, stack, tenant_login)
    page.get_by_role("link", name="Privacy").click()
    form = page.locator("#privacy-form")
    form.get_by_label("End-user id").fill("visitor-42")
    with page.expect_download() as download:
        form.get_by_role("button", name="Export their data").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["end_user_id"] == "visitor-42"
    assert [call["id"] for call in exported["sessions"]] == [call_id]
    assert {"role": "user", "text": "Hello there."}.items() <= exported["sessions"][0][
        "transcript"
    ][0].items()
    expect(page.locator("#privacy-result")).to_have_text("Exported 1 call of visitor-42.")

    page.once("dialog", lambda dialog: dialog.accept())
    form.get_by_role("button", name="Erase their data").click()
    expect(page.locator("#privacy-result")).to_have_text(
        "Erased 1 call and 2 transcript lines of visitor-42."
    )
    remaining = stack.api("GET", "/api/v1/sessions?end_user_id=visitor-42", token=token)
    assert remaining["items"] == []


def open_new_agent_form(
    page: Page, stack: Stack, login: dict[str, str], *, name: str, instructions: str
) -> Locator:
    """Logs in, opens "New agent" and fills in its name and instructions; returns the form."""
    log_in(page, stack, login)
    page.get_by_role("link", name="New agent").click()
    form = page.locator("#agent-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Instructions").fill(instructions)
    return form


def test_agent_form_errors_say_what_to_fix(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    form = open_new_agent_form(page, stack, tenant_login, name="Broken", instructions="Anything.")
    form.get_by_label("Allowed origins").fill("shop.example.com")
    form.get_by_role("button", name="Save agent").click()
    # The API's validation message, naming the field.
    expect(page.locator("#notice")).to_contain_text("allowed_origins.0")
    expect(page.get_by_role("heading", name="New agent")).to_be_visible()


def test_agent_tools_are_edited_one_by_one_with_errors_beside_the_field(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    form = open_new_agent_form(
        page, stack, tenant_login, name="Order desk", instructions="Look orders up."
    )
    form.get_by_role("button", name="Add a tool").click()
    tool = form.locator("fieldset.tool").nth(0)
    expect(tool.locator("legend")).to_have_text("Tool 1")
    expect(tool.get_by_label("Tool name")).to_be_focused()
    tool.get_by_label("Tool name").fill("order_status")
    tool.get_by_label("What it does").fill("The status of an order, by its number.")
    tool.get_by_label("Webhook URL").fill("https://shop.example/hooks/orders")
    parameters = tool.get_by_label("Parameters")
    parameters_error = tool.locator('[data-error="parameters"]')

    # Checked in the browser as it is typed: not JSON, then not an object schema.
    parameters.fill('{"type": "object", "properties": {')
    expect(parameters_error).to_contain_text("Not valid JSON")
    expect(parameters).to_have_attribute("aria-invalid", "true")
    parameters.fill('["order"]')
    expect(parameters_error).to_contain_text('{"type": "object"')
    form.get_by_role("button", name="Save agent").click()
    expect(page.locator("#notice")).to_contain_text("(tools.0.parameters)")
    expect(page.get_by_role("heading", name="New agent")).to_be_visible()

    # Valid JSON the server refuses (a type Gemini does not know): its message, beside the field.
    parameters.fill(
        '{"type": "object", "properties": {"number": {"type": "strng"}}, "required": ["number"]}'
    )
    expect(parameters_error).to_be_hidden()
    form.get_by_role("button", name="Save agent").click()
    expect(parameters_error).to_contain_text("parameters.properties.number.type")
    expect(parameters).to_be_focused()
    expect(page.get_by_role("heading", name="New agent")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-agent-tool-error.png", full_page=True)

    parameters.fill(
        '{"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]}'
    )
    form.get_by_role("button", name="Save agent").click()
    expect(page.get_by_role("heading", name="Order desk")).to_be_visible()
    expect(parameters_error).to_be_hidden()
    agents = stack.api("GET", "/api/v1/agents", token=tenant_login["token"])["items"]
    (saved,) = [agent for agent in agents if agent["name"] == "Order desk"]
    assert saved["tools"] == [
        {
            "name": "order_status",
            "description": "The status of an order, by its number.",
            "url": "https://shop.example/hooks/orders",
            "parameters": {
                "type": "object",
                "properties": {"number": {"type": "string"}},
                "required": ["number"],
            },
            "timeout_seconds": 10.0,
        }
    ]

    # A second tool with the same name: the list-wide error goes under the list.
    page.reload()
    expect(form.locator("fieldset.tool")).to_have_count(1)
    expect(tool.get_by_label("Tool name")).to_have_value("order_status")
    form.get_by_role("button", name="Add a tool").click()
    second = form.locator("fieldset.tool").nth(1)
    expect(second.locator("legend")).to_have_text("Tool 2")
    second.get_by_label("Tool name").fill("order_status")
    second.get_by_label("What it does").fill("Again.")
    second.get_by_label("Webhook URL").fill("https://shop.example/hooks/again")
    form.get_by_role("button", name="Save agent").click()
    expect(form.locator("#tools-error")).to_contain_text("unique")
    second.get_by_role("button", name="Remove this tool").click()
    tool.get_by_role("button", name="Remove this tool").click()
    form.get_by_role("button", name="Save agent").click()
    expect(page.locator("#notice")).to_have_text("Agent saved.")
    agent = stack.api("GET", f"/api/v1/agents/{saved['id']}", token=tenant_login["token"])
    assert agent["tools"] == []


def test_the_demo_page_embeds_the_widget_for_an_agent(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    agent = create_agent(stack, tenant_login["token"], [stack.public_url], name="Demo desk")
    goto(page, f"{stack.public_url}/demo/?agent={agent['public_id']}")
    host = widget(page)
    expect(host).to_have_attribute("data-orbis-config", "loaded")
    expect(host.locator(".launcher")).to_have_attribute("aria-label", "Talk to Demo desk")
    expect(page.locator("#demo-snippet")).to_contain_text(f'data-agent="{agent["public_id"]}"')


def test_an_expired_session_returns_to_the_login_with_the_reason_and_logout_forgets_it(
    page: Page, stack: Stack, tenant_login: dict[str, str]
) -> None:
    log_in(page, stack, tenant_login)
    # Both tokens no longer accepted, as after a long absence.
    page.evaluate(
        """() => {
            const key = 'orbis.dashboard.auth';
            const tokens = JSON.parse(sessionStorage.getItem(key));
            tokens.access_token = 'expired';
            tokens.refresh_token = 'revoked';
            sessionStorage.setItem(key, JSON.stringify(tokens));
        }"""
    )
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("#notice")).to_have_text("Your session has expired. Please log in again.")

    log_in(page, stack, tenant_login)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('orbis.dashboard.auth')") is None
    expect(page.locator("#nav")).to_be_hidden()
