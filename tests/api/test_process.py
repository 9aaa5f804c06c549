"""Health, readiness, metrics, the JSON error shape and request ids."""

from __future__ import annotations

import logging

import pytest

from runtime.common.logs import JsonFormatter
from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration


async def test_healthz_and_readyz(api: ApiHarness) -> None:
    await api.call("GET", "/healthz", expect=200)
    _, body = await api.call("GET", "/readyz", expect=200)
    assert body == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


async def test_unknown_route_is_a_json_error_with_request_id(api: ApiHarness) -> None:
    async with api.http.get(api.url + "/api/v1/nope", headers={"X-Request-Id": "abc-123"}) as resp:
        assert resp.status == 404
        assert resp.headers["X-Request-Id"] == "abc-123"
        body = await resp.json()
    assert body == {"error": {"code": "not_found", "message": "Not Found", "request_id": "abc-123"}}


async def test_wrong_method_is_405_json(api: ApiHarness) -> None:
    status, body = await api.call("DELETE", "/healthz")
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"


async def test_invalid_json_and_validation_errors_name_the_field(api: ApiHarness) -> None:
    async with api.http.post(
        api.url + "/api/v1/auth/signup",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"
    status, body = await api.call(
        "POST",
        "/api/v1/auth/signup",
        json={"org_name": "A", "email": "a@example.com", "password": "short"},
    )
    assert status == 422
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["field"] == "password"
    assert "Traceback" not in body["error"]["message"]


async def test_metrics_count_requests_by_route(api: ApiHarness) -> None:
    await api.call("GET", "/healthz", expect=200)
    await api.call("GET", "/api/v1/nope", expect=404)
    async with api.http.get(api.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert 'orbis_api_http_request_duration_seconds_count{method="GET",route="/healthz"}' in text
    assert 'orbis_api_http_responses_total{method="GET",route="unmatched",status_class="4xx"}' in (
        text
    )
    assert "orbis_api_db_query_duration_seconds_count" in text


async def test_text_postgres_cannot_store_is_a_validation_error(api: ApiHarness) -> None:
    tenant = await api.signup()
    status, body = await api.call(
        "POST",
        "/api/v1/agents",
        json={"name": "a\u0000b", "instructions": "x"},
        headers=tenant.headers,
    )
    assert (status, body["error"]["field"]) == (422, "name")
    status, body = await api.call(
        "POST",
        "/internal/audit",
        json={"action": "x", "detail": {"k": "nul\u0000"}},
        headers=api.internal_headers,
    )
    assert (status, body["error"]["field"]) == (422, "detail.k")
    # An unpaired surrogate escape is not valid JSON text for the parser: a clean 400.
    async with api.http.post(
        api.url + "/internal/audit",
        data=b'{"action": "x", "detail": {"k": "\\udac6"}}',
        headers=api.internal_headers,
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"
    status, body = await api.call("GET", "/api/v1/end-users/a%00b/export", headers=tenant.headers)
    assert (status, body["error"]["field"]) == (422, "end_user_id")
    status, body = await api.call("GET", "/api/v1/widget/agents/a%00b")
    assert (status, body["error"]["field"]) == (422, "public_id")


async def test_access_log_names_the_route_not_the_path(
    api: ApiHarness, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await api.signup()
    caplog.set_level(logging.INFO, logger="orbis.access")
    await api.call(
        "GET",
        "/api/v1/end-users/jane.doe@example.com/export",
        headers={**tenant.headers, "X-Request-Id": "req-42"},
        expect=200,
    )
    (line,) = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "req-42"]
    fields = line.fields  # type: ignore[attr-defined]
    assert fields["route"] == "/api/v1/end-users/{end_user_id}/export"
    assert fields["status"] == 200
    assert "jane.doe" not in JsonFormatter("api").format(line)
