"""Agents CRUD: validation and tenant isolation."""

from __future__ import annotations

import pytest

from runtime.api.models.agents import AgentPatch
from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "url": "https://hooks.example/weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "city name"}},
        "required": ["city"],
    },
}


async def test_crud_roundtrip(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(
        tenant,
        name="Desk",
        language="fr-FR",
        model="gemini-2.0-flash-live",
        tools=[WEATHER_TOOL],
        allowed_origins=["https://shop.example"],
    )
    assert agent["public_id"].startswith("agt_")
    assert agent["tools"][0]["timeout_seconds"] == 10.0
    path = f"/api/v1/agents/{agent['id']}"
    _, patched = await api.call(
        "PATCH",
        path,
        json={"greeting": "Bonjour", "model": None},
        headers=tenant.headers,
        expect=200,
    )
    assert (patched["greeting"], patched["model"], patched["language"]) == (
        "Bonjour",
        None,
        "fr-FR",
    )
    _, listed = await api.call("GET", "/api/v1/agents", headers=tenant.headers, expect=200)
    assert [item["id"] for item in listed["items"]] == [agent["id"]]
    _, rotated = await api.call(
        "POST", path + "/webhook-secret", headers=tenant.headers, expect=200
    )
    assert len(rotated["webhook_secret"]) == 64
    assert rotated["webhook_secret"] != agent["webhook_secret"]
    await api.call("DELETE", path, headers=tenant.headers, expect=204)
    status, body = await api.call("GET", path, headers=tenant.headers)
    assert (status, body["error"]["code"]) == (404, "agent_not_found")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"allowed_origins": ["https://shop.example/path"]}, "allowed_origins.0"),
        ({"max_session_seconds": 5}, "max_session_seconds"),
        (
            {"tools": [{**WEATHER_TOOL, "parameters": {"type": "object", "$ref": "#/x"}}]},
            "tools.0.parameters",
        ),
        (  # a keyword's value of the wrong type (the SDK's Schema checks it)
            {"tools": [{**WEATHER_TOOL, "parameters": {"type": "object", "maxItems": "2"}}]},
            "tools.0.parameters",
        ),
        ({"tools": [{**WEATHER_TOOL, "url": "ftp://x"}]}, "tools.0.url"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_validation_names_the_field(
    api: ApiHarness, fields: dict[str, object], field: str
) -> None:
    tenant = await api.signup()
    payload = {"name": "A", "instructions": "B", **fields}
    status, body = await api.call("POST", "/api/v1/agents", json=payload, headers=tenant.headers)
    assert status == 422, body
    assert body["error"]["field"] == field


async def test_patch_refuses_null_for_required_fields(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant)
    status, body = await api.call(
        "PATCH", f"/api/v1/agents/{agent['id']}", json={"name": None}, headers=tenant.headers
    )
    assert status == 422
    assert "name" in body["error"]["message"]


async def test_tenants_cannot_touch_each_others_agents(api: ApiHarness) -> None:
    alice, mallory = await api.signup(), await api.signup()
    agent = await api.create_agent(alice)
    path = f"/api/v1/agents/{agent['id']}"
    for method, suffix, payload in (
        ("GET", "", None),
        ("PATCH", "", {"name": "pwned"}),
        ("DELETE", "", None),
        ("POST", "/webhook-secret", None),
    ):
        status, body = await api.call(method, path + suffix, json=payload, headers=mallory.headers)
        assert (status, body["error"]["code"]) == (404, "agent_not_found")
    _, listed = await api.call("GET", "/api/v1/agents", headers=mallory.headers, expect=200)
    assert listed["items"] == []
    _, still = await api.call("GET", path, headers=alice.headers, expect=200)
    assert (still["name"], still["webhook_secret"]) == (agent["name"], agent["webhook_secret"])


async def test_agents_carry_the_embed_snippet_tenants_paste(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(tenant)
    expected = (
        f'<script src="https://voice.test/widget.js" data-agent="{agent["public_id"]}" '
        "async></script>"
    )
    assert agent["embed_snippet"] == expected
    _, listed = await api.call("GET", "/api/v1/agents", headers=tenant.headers, expect=200)
    assert [item["embed_snippet"] for item in listed["items"]] == [expected]
    _, read = await api.call(
        "GET", f"/api/v1/agents/{agent['id']}", headers=tenant.headers, expect=200
    )
    assert read["embed_snippet"] == expected


async def test_patch_null_puts_a_field_back_to_its_default(api: ApiHarness) -> None:
    tenant = await api.signup()
    agent = await api.create_agent(
        tenant,
        voice="Kore",
        greeting="Hi",
        model="m1",
        tools=[WEATHER_TOOL],
        allowed_origins=["https://shop.example"],
        max_session_seconds=60,
    )
    nulls = dict.fromkeys(
        (
            "voice",
            "greeting",
            "model",
            "tools",
            "allowed_origins",
            "max_session_seconds",
            "max_concurrent_calls",
            "language",
        ),
    )
    _, patched = await api.call(
        "PATCH", f"/api/v1/agents/{agent['id']}", json=nulls, headers=tenant.headers, expect=200
    )
    fresh = await api.create_agent(tenant)
    assert {name: patched[name] for name in nulls} == {name: fresh[name] for name in nulls}
    assert (patched["name"], patched["instructions"]) == (agent["name"], agent["instructions"])


def test_patch_schema_says_which_fields_may_be_null() -> None:
    properties = AgentPatch.model_json_schema()["properties"]
    for name in ("name", "instructions"):
        assert properties[name]["type"] == "string" and "default" not in properties[name]
    assert {"type": "null"} in properties["voice"]["anyOf"]
