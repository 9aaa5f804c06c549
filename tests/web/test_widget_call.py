"""A visitor's call through the widget on a tenant's page, end to end in Chromium:
page -> nginx TLS -> API (session) -> gateway (WebSocket) -> emulator (Gemini Live), and back.
"""

from __future__ import annotations

import psycopg
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.web.flows import (
    CALL_TIMEOUT_MS,
    TenantShop,
    end_call,
    serving_instance,
    start_call,
    wait_for,
)
from tests.web.stack import Stack
from tests.web.support import ARTIFACTS, STRANGER_HOST

pytestmark = pytest.mark.browser


def test_call_on_an_allowed_origin_plays_audio_shows_captions_and_stores_the_transcript(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent()
    host = shop.open_embed(page, "shop.html", agent["public_id"])

    # The page really is strict: it refuses innerHTML (Trusted Types), which the widget avoids.
    with pytest.raises(PlaywrightError, match="TrustedHTML"):
        page.evaluate("document.body.innerHTML = '<b>x</b>'")
    expect(host).to_have_attribute("data-orbis-config", "loaded")
    launcher = host.locator(".launcher")
    # The page's hostile CSS (hiding every button, red everything) does not reach the widget.
    expect(launcher).to_be_visible()
    expect(launcher).to_have_attribute("aria-label", "Talk to Shop helper")
    call_id = start_call(page, host)
    # The emulator hears the speech WAV, answers with 1.2 s of audio and transcriptions.
    wait_for(page, "Number(w.dataset.orbisBytesPlayed || 0) >= 24000 * 2 * 0.5")
    captions = host.locator(".captions li")
    expect(captions.filter(has_text="Hello there.")).to_have_attribute("data-role", "user")
    expect(captions.filter(has_text="Hi! How can I help?")).to_have_attribute("data-role", "agent")
    assert int(host.get_attribute("data-orbis-bytes-sent") or 0) > 16000 * 2  # > 1 s of mic
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "widget-live-call.png")

    end_call(host)
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
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent()
    host = shop.open_embed(page, "elsewhere.html", agent["public_id"], host=STRANGER_HOST)
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


def test_a_second_call_over_the_agents_limit_is_told_the_lines_are_busy(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent(max_concurrent_calls=1)
    first = shop.open_embed(page, "busy.html", agent["public_id"])
    start_call(page, first)

    second = page.context.new_page()
    host = shop.visit(second, "busy.html")
    host.locator(".launcher").click()
    expect(host).to_have_attribute("data-orbis-state", "limit-reached", timeout=CALL_TIMEOUT_MS)
    expect(host).to_have_attribute("data-orbis-error", "call_limit_reached")
    expect(host.locator(".status")).to_have_text(
        "All lines are busy right now. Please try again in a few minutes."
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    second.screenshot(path=ARTIFACTS / "widget-limit-reached.png")
    second.close()
    # The first call was not disturbed.
    expect(first).to_have_attribute("data-orbis-state", "live")
    end_call(first)


# Sends the page's first `count` resume handshakes to a path nginx answers 404, so they are
# refused before the upgrade, as a draining instance picked by the load balancer refuses them.
REFUSE_RESUMES = """(count) => {
    const Real = window.WebSocket;
    window.refusedResumes = 0;
    window.WebSocket = class extends Real {
        constructor(url, protocols) {
            const refuse = String(url).includes('resume=') && window.refusedResumes < count;
            if (refuse) window.refusedResumes += 1;
            super(refuse ? String(url).replace('/ws/call', '/ws/refused') : url, protocols);
        }
    };
}"""


def _drain_mid_call(
    page: Page, stack: Stack, shop: TenantShop, agent: dict[str, str], refused: int
) -> tuple[str, list[str]]:
    """A call whose gateway drains (a deploy); the visitor talks on, then hangs up.
    Returns the first call id and every call id the widget showed."""
    page.add_init_script(script=f"({REFUSE_RESUMES})({refused})")
    host = shop.open_embed(page, "deploy.html", agent["public_id"])
    host.locator(".launcher").click()
    agent_lines = host.locator(".captions li[data-role=agent]", has_text="Hi! How can I help?")
    expect(agent_lines.first).to_be_visible(timeout=CALL_TIMEOUT_MS)
    call_id = host.get_attribute("data-orbis-call-id")
    assert call_id
    draining = stack.gateways[serving_instance(stack, call_id)]
    page.evaluate(
        """() => {
            const w = document.querySelector('orbis-voice-widget');
            window.seenStates = [];
            window.seenCallIds = new Set([w.dataset.orbisCallId]);
            new MutationObserver(() => {
                window.seenStates.push(w.dataset.orbisState);
                window.seenCallIds.add(w.dataset.orbisCallId);
            }).observe(w, { attributes: true });
        }"""
    )
    answers_before = agent_lines.count()
    try:
        # SIGTERM drains the replica, which offers the call (with its model session) to the
        # other replica through a resume token; it exits once its call has moved or ended.
        assert draining.stop() == 0
        wait_for(
            page, "window.seenStates.includes('reconnecting') && w.dataset.orbisState === 'live'"
        )
        # The conversation goes on in the same caption list: the model answers again, and the
        # captions from before the move are still there.
        wait_for(
            page,
            "[...w.shadowRoot.querySelectorAll('.captions li[data-role=agent]')]"
            f".filter((li) => li.textContent === 'Hi! How can I help?').length > {answers_before}",
        )
        assert page.evaluate("window.refusedResumes") == refused
        end_call(host)
    finally:
        draining.start()
    return call_id, page.evaluate("[...window.seenCallIds]")


def _ended_calls(page: Page, stack: Stack, agent: dict[str, str]) -> dict[str, str]:
    """The agent's calls and their end reasons, once every one has ended."""
    with psycopg.connect(stack.database_conninfo) as conn:
        calls: list[tuple[str, str | None]] = []
        for _ in range(100):
            calls = conn.execute(
                "SELECT c.id::text, c.end_reason FROM calls c JOIN agents a ON a.id = c.agent_id"
                " WHERE a.public_id = %s",
                (agent["public_id"],),
            ).fetchall()
            if calls and all(reason for _, reason in calls):
                break
            page.wait_for_timeout(100)
    return {call_id: str(reason) for call_id, reason in calls}


def test_a_draining_gateway_moves_the_same_call_to_another_replica(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent()
    # The first resume handshake is refused; the widget tries the same token again.
    call_id, shown = _drain_mid_call(page, stack, shop, agent, refused=1)
    assert shown == [call_id]
    # One call, ended by the visitor's hang-up on the replica it moved to, with one transcript
    # numbered on from where the drained replica stopped.
    assert _ended_calls(page, stack, agent) == {call_id: "hangup"}
    with psycopg.connect(stack.database_conninfo) as conn:
        segments = conn.execute(
            "SELECT seq, role, text FROM transcript_segments WHERE call_id = %s ORDER BY seq",
            (call_id,),
        ).fetchall()
    assert [seq for seq, _, _ in segments] == list(range(1, len(segments) + 1))
    answers = [
        seq for seq, role, text in segments if (role, text) == ("agent", "Hi! How can I help?")
    ]
    assert len(answers) >= 2, segments


def test_a_call_that_cannot_be_moved_goes_on_as_a_fresh_call(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent()
    # Every resume handshake is refused: after its retries the widget takes a fresh session.
    call_id, shown = _drain_mid_call(page, stack, shop, agent, refused=4)
    assert shown[0] == call_id and len(shown) == 2
    assert _ended_calls(page, stack, agent) == {call_id: "drain", shown[1]: "hangup"}


def test_an_unknown_agent_says_it_is_not_available(page: Page, shop: TenantShop) -> None:
    host = shop.open_embed(page, "stale.html", "agt_deleted_long_ago")
    # The config endpoint shares nothing with a page it cannot vouch for; the session
    # endpoint says why.
    expect(host).to_have_attribute("data-orbis-config", "failed")
    host.locator(".launcher").click()
    expect(host).to_have_attribute("data-orbis-state", "unavailable")
    expect(host).to_have_attribute("data-orbis-error", "agent_not_found")
    expect(host.locator(".status")).to_have_text("This voice agent is not available.")


def test_an_interruption_silences_the_agent_at_once(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    # The emulator's control keyword: each reply is interrupted (barge-in) as it ends, with
    # most of its audio still queued in the browser.
    agent = shop.create_agent(instructions="Be brief. [[emulator interrupt=after_turn_complete]]")
    host = shop.open_embed(page, "barge-in.html", agent["public_id"])
    host.locator(".launcher").click()

    wait_for(page, "Number(w.dataset.orbisInterruptions || 0) >= 1")
    # Audio arrives faster than it plays; what was still queued when `interrupted` came was
    # dropped, not played.
    wait_for(page, "Number(w.dataset.orbisBytesFlushed || 0) > 0")
    received = int(host.get_attribute("data-orbis-bytes-received") or 0)
    played = int(host.get_attribute("data-orbis-bytes-played") or 0)
    flushed = int(host.get_attribute("data-orbis-bytes-flushed") or 0)
    assert played + flushed <= received
    expect(host).to_have_attribute("data-orbis-state", "live")
    end_call(host)


def test_a_dropped_connection_reconnects_and_gives_up_clearly_when_nothing_answers(
    page: Page, stack: Stack, shop: TenantShop
) -> None:
    agent = shop.create_agent()
    host = shop.open_embed(page, "crash.html", agent["public_id"])
    first_call = start_call(page, host)
    serving = stack.gateways[serving_instance(stack, first_call)]
    (other,) = (gateway for gateway in stack.gateways.values() if gateway is not serving)
    try:
        serving.crash()
        # The socket dropped without a word: a fresh session, on the replica still up.
        wait_for(
            page, f"w.dataset.orbisState === 'live' && w.dataset.orbisCallId !== '{first_call}'"
        )
        other.crash()
        # Nothing answers any more: a few retries, then a clear message.
        expect(host).to_have_attribute("data-orbis-state", "network-lost", timeout=CALL_TIMEOUT_MS)
        expect(host.locator(".status")).to_have_text(
            "The connection was lost. Check your network and try again."
        )
        expect(host.locator(".action")).to_have_text("Call again")
    finally:
        serving.start()
        other.start()
