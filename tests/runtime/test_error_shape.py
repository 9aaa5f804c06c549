"""The one JSON error shape of the API and the gateway (runtime/common/http_errors.py).

Every error answer of either app has one shape:

    {"error": {"code": "<stable_snake_case>", "message": "<for humans>",
               "field": "<the input at fault>" (validation errors only),
               "request_id": "<the X-Request-Id header of the same answer>"}}

The routes are read from each app's router, not from a list here, so a route added later is
walked too: each gets a wrong method, and the 4xx that fit it (missing credentials, a body that
is not JSON, an id nothing can have). The gateway's client of the API (internal_api) reads only
this shape; any other answer is an upstream error.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runtime.api.app import ALL_ROUTES
from runtime.api.routing import Auth
from runtime.emulator.testing import running_emulator
from runtime.gateway.internal_api import ApiRejected, ApiUnavailable, InternalApi
from runtime.gateway.settings import GatewaySettings
from tests.api.fixtures import ApiHarness, api
from tests.gateway.support import (
    ORIGIN,
    GatewayAddress,
    RunningGateway,
    gateway_settings,
    refused_handshake,
    running_gateway,
)

__all__ = ["api"]

pytestmark = pytest.mark.integration

ERROR_KEYS = {"code", "message", "field", "request_id"}
# No resource has this id: longer than any id either app accepts (uuids; free text ≤ 200).
NO_SUCH_ID = "no-such-id-" + "x" * 240
WRONG_METHODS = ("DELETE", "PATCH", "PUT", "POST", "GET")
_PARAM = re.compile(r"\{[^}]+\}")


@dataclass(frozen=True)
class Probe:
    """One request meant to fail; `must_fail` False where the route may well answer it (an
    open route asked without credentials): then only an error answer is checked."""

    why: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    must_fail: bool = True


def assert_error_shape(
    status: int, headers: Any, body: Any, *, request_id: str | None = None
) -> dict[str, Any]:
    """The answer is a 4xx/5xx in the one error shape; returns its `error`."""
    assert status >= 400, status
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and {"code", "message", "request_id"} <= set(error), error
    assert set(error) <= ERROR_KEYS, error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    assert "Traceback" not in error["message"], error
    assert "field" not in error or isinstance(error["field"], str), error
    assert error["request_id"] == headers["X-Request-Id"], (error, headers)
    if request_id is not None:
        assert error["request_id"] == request_id, error
    return error


def concrete(path: str) -> str:
    return _PARAM.sub(NO_SUCH_ID, path)


def wrong_method_probes(app: web.Application) -> Iterator[Probe]:
    """Every path of the router, asked with a method it does not take: 405. (aiohttp may
    hold one path in several resources, one per method, so methods are grouped by path.)"""
    methods: dict[str, set[str]] = {}
    for resource in app.router.resources():
        methods.setdefault(resource.canonical, set()).update(route.method for route in resource)
    for path, taken in methods.items():
        wrong = next(method for method in WRONG_METHODS if method not in taken)
        yield Probe("wrong method", wrong, concrete(path))


def own_routes(app: web.Application) -> Iterator[web.AbstractRoute]:
    """The router's routes, less HEAD (its answers have no body; its GET twin is walked)."""
    for route in app.router.routes():
        if route.method != "HEAD":
            yield route


def api_probes(
    app: web.Application, *, tenant: dict[str, str], internal: dict[str, str]
) -> Iterator[Probe]:
    table = {route.operation_id: route for route in ALL_ROUTES}
    yield Probe("unknown route", "GET", "/api/v1/no/such/route")
    yield from wrong_method_probes(app)
    for registered in own_routes(app):
        assert registered.name in table, f"{registered} is not in the route table"
        route = table[registered.name]
        path = concrete(route.path)
        credentials = {Auth.TENANT: tenant, Auth.INTERNAL: internal}.get(route.auth, {})
        if credentials:
            yield Probe("missing credentials", route.method, path)
        if route.body is not None:
            yield Probe(
                "body not JSON",
                route.method,
                path,
                headers={**credentials, "Content-Type": "application/json"},
                body=b"{not json",
            )
        if path != route.path:
            yield Probe("no such id", route.method, path, headers=credentials, body=b"{}")


def gateway_probes(app: web.Application, *, internal: dict[str, str]) -> Iterator[Probe]:
    yield Probe("unknown route", "GET", "/no/such/route")
    yield from wrong_method_probes(app)
    for route in own_routes(app):
        canonical = route.resource.canonical if route.resource is not None else ""
        path = concrete(canonical)
        yield Probe("without credentials", route.method, path, must_fail=False)
        if path != canonical:
            yield Probe("no such id", route.method, path, headers=internal)


async def walk(http: aiohttp.ClientSession, url: str, probes: Iterator[Probe]) -> list[str]:
    """Send every probe; what went wrong, one line each (all of them, not the first)."""
    wrong: list[str] = []
    for number, probe in enumerate(probes):
        request_id = f"shape-{number}"
        headers = {**probe.headers, "X-Request-Id": request_id}
        async with http.request(
            probe.method, url + probe.path, headers=headers, data=probe.body
        ) as response:
            status = response.status
            text = await response.text()
            where = f"{probe.method} {probe.path[:60]} ({probe.why}): {status} {text[:200]}"
            if not 400 <= status < 500:
                if probe.must_fail or status >= 500:
                    wrong.append(f"{where}: not a 4xx")
                continue
            try:
                body = json.loads(text)
                error = assert_error_shape(status, response.headers, body, request_id=request_id)
            except (ValueError, AssertionError) as exc:
                wrong.append(f"{where}: {exc}")
                continue
            if probe.why == "wrong method" and (
                status != 405
                or error["code"] != "method_not_allowed"
                or not response.headers.get("Allow")
            ):
                wrong.append(f"{where}: not 405 method_not_allowed with Allow")
    return wrong


@pytest.fixture
async def gateway_config(
    api: ApiHarness, redis_url: str, tmp_path: Path
) -> AsyncIterator[GatewaySettings]:
    async with running_emulator(tmp_path / "emulator") as emulator:
        yield gateway_settings(
            api_url=api.url,
            internal_token=api.internal_token,
            redis_url=redis_url,
            emulator=emulator,
        )


@pytest.fixture
async def gateway(gateway_config: GatewaySettings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gateway_config) as running:
        yield running


async def test_every_api_route_errs_in_the_shape(api: ApiHarness) -> None:
    tenant = await api.signup()
    probes = api_probes(api.app, tenant=tenant.headers, internal=api.internal_headers)
    assert await walk(api.http, api.url, probes) == []


async def test_every_gateway_route_errs_in_the_shape(
    api: ApiHarness, gateway: RunningGateway
) -> None:
    probes = gateway_probes(gateway.app, internal=api.internal_headers)
    assert await walk(api.http, gateway.url, probes) == []


async def test_a_validation_error_names_its_field(api: ApiHarness) -> None:
    async with api.http.post(
        api.url + "/api/v1/auth/signup",
        json={"org_name": "A", "email": "a@example.com", "password": "short"},
    ) as response:
        error = assert_error_shape(response.status, response.headers, await response.json())
    assert (response.status, error["code"], error["field"]) == (422, "validation_error", "password")


async def handshake(
    http: aiohttp.ClientSession, gateway: GatewayAddress, query: str, *, origin: str | None
) -> tuple[int, Any, dict[str, Any]]:
    """A refused WebSocket handshake: status, headers and its error, checked for the shape."""
    status, headers, body = await refused_handshake(
        http, f"{gateway.url}/ws/call?{query}", origin=origin
    )
    return status, headers, assert_error_shape(status, headers, body)


async def test_handshake_refusals_are_in_the_shape(
    api: ApiHarness, gateway: RunningGateway
) -> None:
    status, _, error = await handshake(api.http, gateway, "token=t", origin=None)
    assert (status, error["code"]) == (403, "origin_not_allowed")
    status, _, error = await handshake(api.http, gateway, "", origin=ORIGIN)
    assert (status, error["code"]) == (401, "token_invalid")
    # Redeemed by the API, which refuses it in the shape internal_api reads.
    status, _, error = await handshake(api.http, gateway, "token=wst_unknown", origin=ORIGIN)
    assert (status, error["code"]) == (401, "token_invalid")


@pytest.fixture
async def not_the_api() -> AsyncIterator[str]:
    """An HTTP server that is not the API (a wrong ORBIS_API_URL): aiohttp's plain-text 404s."""
    runner = web.AppRunner(web.Application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def test_internal_api_reads_the_apis_refusals(api: ApiHarness) -> None:
    client = InternalApi(api.http, api.url, api.internal_token, timeout=5.0)
    with pytest.raises(ApiRejected) as refused:
        await client.end_call(
            "00000000-0000-0000-0000-000000000000",
            duration_ms=0,
            end_reason="test",
            usage={"prompt_tokens": 0, "response_tokens": 0, "total_tokens": 0},
        )
    assert (refused.value.status, refused.value.code) == (404, "call_not_found")
    assert "(request " in str(refused.value)


async def test_internal_api_calls_any_other_answer_an_upstream_error(
    api: ApiHarness, not_the_api: str
) -> None:
    client = InternalApi(api.http, not_the_api, api.internal_token, timeout=5.0)
    with pytest.raises(ApiUnavailable, match="without the API's error shape"):
        await client.redeem_call(token="wst_x", origin=ORIGIN, instance_id="gw-test")
    with pytest.raises(ApiUnavailable, match="without the API's error shape"):
        await client.post_transcript("00000000-0000-0000-0000-000000000000", [])
    outcome = await client.execute_tool(
        call_id="00000000-0000-0000-0000-000000000000", name="x", arguments={}, timeout_seconds=5.0
    )
    assert outcome["error"]["code"] == "tool_unavailable"
