"""Sessions and transcripts: list, filter, page, read; GDPR export and erasure; isolation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.api import keys
from runtime.api.models.sessions import CURSOR_PATTERN
from tests.api.fixtures import ApiHarness, Tenant

pytestmark = pytest.mark.integration

SHOP = "https://shop.example"


async def _call(
    api: ApiHarness, agent: dict[str, Any], *, end_user_id: str | None, words: list[str]
) -> str:
    session = await api.widget_session(agent["public_id"], origin=SHOP, end_user_id=end_user_id)
    call_id = str((await api.start_call(session["token"], origin=SHOP))["call_id"])
    at = datetime.now(UTC).isoformat()
    segments = [
        {"seq": i, "role": "user" if i % 2 else "agent", "text": text, "at": at}
        for i, text in enumerate(words)
    ]
    if segments:
        await api.call(
            "POST",
            f"/internal/calls/{call_id}/transcript",
            json={"segments": segments},
            headers=api.internal_headers,
            expect=204,
        )
    return call_id


async def _setup(api: ApiHarness) -> tuple[Tenant, dict[str, Any], list[str]]:
    tenant = await api.signup()
    agent = await api.create_agent(tenant, allowed_origins=[SHOP])
    calls = [
        await _call(api, agent, end_user_id="visitor-1", words=["Hello", "My card is 1234"]),
        await _call(api, agent, end_user_id="visitor-2", words=["Hi"]),
        await _call(api, agent, end_user_id="visitor-1", words=["Back again"]),
    ]
    await api.call(
        "POST",
        f"/internal/calls/{calls[1]}/end",
        json={"duration_ms": 1000, "end_reason": "client_hangup"},
        headers=api.internal_headers,
        expect=204,
    )
    return tenant, agent, calls


async def test_list_filter_page_and_read(api: ApiHarness) -> None:
    tenant, agent, calls = await _setup(api)
    h = tenant.headers
    _, everything = await api.call("GET", "/api/v1/sessions", headers=h, expect=200)
    assert [s["id"] for s in everything["items"]] == calls[::-1]
    _, visitor = await api.call(
        "GET", "/api/v1/sessions?end_user_id=visitor-1", headers=h, expect=200
    )
    assert {s["id"] for s in visitor["items"]} == {calls[0], calls[2]}
    _, ended = await api.call("GET", "/api/v1/sessions?status=ended", headers=h, expect=200)
    assert [s["id"] for s in ended["items"]] == [calls[1]]
    assert ended["items"][0]["duration_ms"] == 1000
    _, by_agent = await api.call(
        "GET", f"/api/v1/sessions?agent_id={agent['id']}&limit=2", headers=h, expect=200
    )
    assert len(by_agent["items"]) == 2 and by_agent["next_cursor"]
    _, page2 = await api.call(
        "GET", f"/api/v1/sessions?limit=2&cursor={by_agent['next_cursor']}", headers=h, expect=200
    )
    assert [s["id"] for s in page2["items"]] == [calls[0]] and page2["next_cursor"] is None
    _, detail = await api.call("GET", f"/api/v1/sessions/{calls[0]}", headers=h, expect=200)
    assert [seg["text"] for seg in detail["transcript"]] == ["Hello", "My card is 1234"]
    status, body = await api.call("GET", "/api/v1/sessions?cursor=garbage", headers=h)
    assert (status, body["error"]["field"]) == (422, "cursor")


async def test_gdpr_export_and_erase(api: ApiHarness) -> None:
    tenant, _, calls = await _setup(api)
    h = tenant.headers
    _, export = await api.call("GET", "/api/v1/end-users/visitor-1/export", headers=h, expect=200)
    assert [s["id"] for s in export["sessions"]] == [calls[0], calls[2]]
    assert export["sessions"][0]["transcript"][1]["text"] == "My card is 1234"
    _, erased = await api.call("DELETE", "/api/v1/end-users/visitor-1", headers=h, expect=200)
    assert (erased["sessions_erased"], erased["segments_erased"]) == (2, 3)
    _, again = await api.call("GET", "/api/v1/end-users/visitor-1/export", headers=h, expect=200)
    assert again["sessions"] == []
    _, detail = await api.call("GET", f"/api/v1/sessions/{calls[0]}", headers=h, expect=200)
    assert (detail["end_user_id"], detail["transcript"]) == (None, [])
    # Someone else's data is untouched.
    _, other = await api.call("GET", f"/api/v1/sessions/{calls[1]}", headers=h, expect=200)
    assert other["transcript"][0]["text"] == "Hi"
    _, log = await api.call("GET", "/api/v1/audit", headers=h, expect=200)
    actions = [entry["action"] for entry in log["items"]]
    assert actions[:3] == ["gdpr.export", "gdpr.erase", "gdpr.export"]
    assert all("visitor-1" not in str(entry) for entry in log["items"])


async def test_sessions_and_gdpr_are_tenant_isolated(api: ApiHarness) -> None:
    _, _, calls = await _setup(api)
    mallory = await api.signup()
    h = mallory.headers
    status, body = await api.call("GET", f"/api/v1/sessions/{calls[0]}", headers=h)
    assert (status, body["error"]["code"]) == (404, "session_not_found")
    _, listed = await api.call("GET", "/api/v1/sessions", headers=h, expect=200)
    assert listed["items"] == []
    _, export = await api.call("GET", "/api/v1/end-users/visitor-1/export", headers=h, expect=200)
    assert export["sessions"] == []
    _, erased = await api.call("DELETE", "/api/v1/end-users/visitor-1", headers=h, expect=200)
    assert (erased["sessions_erased"], erased["segments_erased"]) == (0, 0)


async def test_search_finds_calls_by_transcript_text_within_the_tenant(api: ApiHarness) -> None:
    tenant, _, calls = await _setup(api)
    h = tenant.headers
    _, card = await api.call("GET", "/api/v1/sessions?q=CARD%20is", headers=h, expect=200)
    assert [(s["id"], s["match"]) for s in card["items"]] == [(calls[0], "My card is 1234")]
    # Substrings of words match; % and _ are plain characters, not wildcards.
    _, again = await api.call("GET", "/api/v1/sessions?q=gai", headers=h, expect=200)
    assert [s["id"] for s in again["items"]] == [calls[2]]
    _, wildcard = await api.call("GET", "/api/v1/sessions?q=%25%25%25", headers=h, expect=200)
    assert wildcard["items"] == []
    # Combined with the other filters and paging; without q there is no match.
    _, visitor = await api.call(
        "GET", "/api/v1/sessions?q=ello&end_user_id=visitor-2", headers=h, expect=200
    )
    assert visitor["items"] == []
    status, short = await api.call("GET", "/api/v1/sessions?q=ab", headers=h)
    assert (status, short["error"]["field"]) == (
        422,
        "q",
    )  # too short to search (and to use the index)
    _, plain = await api.call("GET", "/api/v1/sessions", headers=h, expect=200)
    assert {s["match"] for s in plain["items"]} == {None}
    # Another tenant with the same words finds only its own call.
    mallory = await api.signup()
    agent = await api.create_agent(mallory, allowed_origins=[SHOP])
    theirs = await _call(api, agent, end_user_id=None, words=["My card is 9999"])
    _, found = await api.call("GET", "/api/v1/sessions?q=card", headers=mallory.headers, expect=200)
    assert [s["id"] for s in found["items"]] == [theirs]
    _, ours = await api.call("GET", "/api/v1/sessions?q=card", headers=h, expect=200)
    assert [s["id"] for s in ours["items"]] == [calls[0]]


async def test_search_is_documented_and_uses_the_trigram_index(api: ApiHarness) -> None:
    _, document = await api.call("GET", "/openapi.json", expect=200)
    parameters = {p["name"]: p for p in document["paths"]["/api/v1/sessions"]["get"]["parameters"]}
    assert "transcript" in parameters["q"]["schema"]["description"]
    async with api.app[keys.DB].transaction() as tx:
        await tx.execute("SET LOCAL enable_seqscan = off")
        plan = await tx.all(
            "EXPLAIN SELECT call_id FROM transcript_segments WHERE org_id = gen_random_uuid() "
            "AND text ILIKE '%card is%'"
        )
    assert "transcript_segments_text_trgm" in str(plan)


async def test_any_cursor_of_the_documented_form_is_a_position(api: ApiHarness) -> None:
    """The schema's cursor pattern is what the server accepts: an issued cursor matches it,
    and a cursor of that form the server never issued still pages (schemathesis sends such)."""
    tenant, _, calls = await _setup(api)
    h = tenant.headers
    _, first = await api.call("GET", "/api/v1/sessions?limit=1", headers=h, expect=200)
    assert re.fullmatch(CURSOR_PATTERN, first["next_cursor"])
    _, rest = await api.call(
        "GET", f"/api/v1/sessions?cursor={first['next_cursor']}", headers=h, expect=200
    )
    assert [s["id"] for s in first["items"] + rest["items"]] == calls[::-1]
    for made_up, expected in (("0-" + "0" * 32, []), ("9" * 16 + "-" + "f" * 32, calls[::-1])):
        _, page = await api.call("GET", f"/api/v1/sessions?cursor={made_up}", headers=h, expect=200)
        assert [s["id"] for s in page["items"]] == expected
