"""The gateway's aiohttp application: `/ws/call`, `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from runtime.common.http_errors import error_response, json_error_middleware
from runtime.common.logs import request_id_middleware
from runtime.common.metrics import metrics_response
from runtime.common.redis_client import open_redis
from runtime.common.settings import reveal
from runtime.gateway.call import Call, CallDeps, Resumption
from runtime.gateway.internal_api import (
    ApiRejected,
    ApiUnavailable,
    CallGrant,
    InternalApi,
)
from runtime.gateway.keys import GATEWAY, SETTINGS
from runtime.gateway.loop_lag import LoopLag
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.process import Gateway
from runtime.gateway.protocol import CloseCode, ErrorCode, error_event, event
from runtime.gateway.redis_state import (
    REDIS_ERRORS,
    CallRecord,
    CallState,
    LeaseOutcome,
    list_live_calls,
    peek_handoff,
    release_handoff,
    request_call_end,
    reserve_handoff,
    take_handoff,
)
from runtime.gateway.settings import GatewaySettings
from runtime.gateway.upstream import make_client

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 20.0  # WebSocket pings to the widget: finds dead clients, keeps nginx open
RETRY_AFTER_SECONDS = 2
# A set-up waits this long at most for the loop to have room (LoopLag.admit), then is refused;
# a loop late for good is judged overloaded sooner (loop_lag.SUSTAINED_SECONDS).
SETUP_WAIT_SECONDS = 10.0


def create_app(
    settings: GatewaySettings, *, gemini_ssl_context: ssl.SSLContext | None = None
) -> web.Application:
    """The gateway app; `gemini_ssl_context` overrides the trust built from the CA file."""
    app = web.Application(middlewares=[request_id_middleware, json_error_middleware(log)])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_gateway_ctx(gemini_ssl_context))
    app.router.add_get("/ws/call", call_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    # Operators' view of every instance's calls (not routed publicly; internal token).
    app.router.add_get("/admin/calls", list_calls)
    app.router.add_post("/admin/calls/{call_id}/end", end_call)
    return app


def _gateway_ctx(
    gemini_ssl_context: ssl.SSLContext | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        metrics_ = GatewayMetrics()
        async with (
            open_redis(settings.redis_url, reveal(settings.redis_password)) as redis_client,
            aiohttp.ClientSession() as http,
        ):
            deps = CallDeps(
                settings=settings,
                api=InternalApi(
                    http,
                    settings.api_url,
                    settings.internal_tokens[0].get_secret_value(),
                    timeout=settings.api_timeout_seconds,
                ),
                genai_client=make_client(
                    api_key=settings.gemini_api_key.get_secret_value(),
                    base_url=settings.gemini_base_url,
                    ca_file=str(settings.gemini_ca_file) if settings.gemini_ca_file else None,
                    ssl_context=gemini_ssl_context,
                ),
                metrics=metrics_,
                state=CallState(redis_client, lease_seconds=settings.slot_lease_seconds),
            )
            loop_lag = LoopLag(
                limit_seconds=settings.max_loop_lag_seconds,
                histogram=metrics_.loop_lag,
                own_histogram=metrics_.own_loop_lag,
                overloaded=metrics_.overloaded,
            )
            gateway = Gateway(deps=deps, loop_lag=loop_lag)
            app[GATEWAY] = gateway
            loops = [
                asyncio.create_task(loop_lag.run(), name="loop-lag"),
                asyncio.create_task(gateway.heartbeat(), name="heartbeat"),
                asyncio.create_task(gateway.listen_for_end_requests(), name="end-requests"),
            ]
            try:
                yield
            finally:
                # Calls still open when the app stops (no drain, e.g. in tests) end now.
                await gateway.drain(grace_seconds=0)
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    return gateway_ctx


def _reject(code: ErrorCode) -> web.Response:
    """Refuse the handshake before the upgrade, with the error's HTTP status."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if code.spec.http_status == 503 else None
    return error_response(
        code.spec.http_status or 400, code.value, code.spec.message, headers=headers
    )


async def call_handler(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    settings = request.app[SETTINGS]
    metrics_ = gateway.deps.metrics
    ws = web.WebSocketResponse(
        max_msg_size=4 * settings.max_frame_bytes,
        heartbeat=HEARTBEAT_SECONDS,
        timeout=2.0,
        # PCM does not deflate usefully; compressing it costs CPU per frame for nothing.
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        return error_response(
            426,
            "bad_request",
            "this endpoint takes WebSocket calls",
            headers={"Upgrade": "websocket"},
        )
    if gateway.busy:
        metrics_.client_errors.labels(code=ErrorCode.SERVER_BUSY.value).inc()
        if not gateway.draining:
            gateway.refused_calls += 1
        return _reject(ErrorCode.SERVER_BUSY)
    origin = request.headers.get("Origin", "")
    token = request.query.get("token", "")
    resume_token = request.query.get("resume", "")
    # The origin is checked before the upgrade: the API checks it against the agent's allowed
    # origins while redeeming the token (a moved call: against the call's own origin), so no
    # unverified page ever gets a socket.
    if not origin:
        return _reject(ErrorCode.ORIGIN_NOT_ALLOWED)
    if not token and not resume_token:
        return _reject(ErrorCode.TOKEN_INVALID)
    gateway.opening += 1
    # A resume attempt holds the offer until the call is set up here; one that fails before
    # then lets go of it, so the widget's retry (or nginx's, on another gateway) can take it.
    attempt = secrets.token_hex(8) if resume_token else ""
    taken = False
    try:
        # Set-ups are paced by the loop's own lag: a burst waits its turn instead of being
        # refused, and is refused only once the calls already held keep the loop late.
        if not await gateway.loop_lag.admit(within=SETUP_WAIT_SECONDS) or gateway.draining:
            metrics_.client_errors.labels(code=ErrorCode.SERVER_BUSY.value).inc()
            if not gateway.draining:
                gateway.refused_calls += 1
            return _reject(ErrorCode.SERVER_BUSY)
        admitted = await (
            _take_over(gateway, origin=origin, resume_token=resume_token, attempt=attempt)
            if resume_token
            else _redeem(gateway, origin=origin, token=token)
        )
        if isinstance(admitted, ErrorCode):
            metrics_.client_errors.labels(code=admitted.value).inc()
            return _reject(admitted)
        grant, resumption = admitted
        if resumption is not None and gateway.draining:
            # Drained while the offer was read: the move goes on elsewhere.
            metrics_.client_errors.labels(code=ErrorCode.SERVER_BUSY.value).inc()
            return _reject(ErrorCode.SERVER_BUSY)
        record = CallRecord(
            call_id=grant.call_id,
            instance_id=settings.instance_id,
            agent_id=grant.agent.id,
            org_id=grant.org_id,
            started_at=resumption.started_at if resumption else time.time(),
        )
        refusal = await _take_slot(gateway, grant, record)
        await ws.prepare(request)
        if refusal is None and resumption is not None:
            refusal = await _take_handoff(gateway, resume_token)
            taken = refusal is None
            if not taken:
                await _release_slot(gateway, record)
        if refusal is not None:
            await _refuse_call(gateway, ws, grant, refusal, moved=resumption is not None)
            return ws
        call = Call(
            ws=ws,
            grant=grant,
            record=record,
            deps=gateway.deps,
            origin=origin,
            resumption=resumption,
        )
        gateway.add(call)
    finally:
        gateway.opening -= 1
        if attempt and not taken:
            await _release_handoff(gateway, resume_token, attempt)
    log.info(
        "call started",
        extra={
            "fields": {
                "call_id": call.call_id,
                "agent_id": grant.agent.id,
                "origin": origin,
                "moved_here": resumption is not None,
            }
        },
    )
    try:
        await call.run()
    finally:
        gateway.remove(call)
        if call.owns_slot:
            await _release_slot(gateway, record)
    return ws


async def _redeem(
    gateway: Gateway, *, origin: str, token: str
) -> tuple[CallGrant, None] | ErrorCode:
    try:
        grant = await gateway.deps.api.redeem_call(
            token=token, origin=origin, instance_id=gateway.deps.settings.instance_id
        )
    except ApiRejected as exc:
        if exc.code == ErrorCode.ORIGIN_NOT_ALLOWED.value or exc.status == 403:
            return ErrorCode.ORIGIN_NOT_ALLOWED
        return ErrorCode.TOKEN_INVALID
    except ApiUnavailable as exc:
        log.warning("token redemption failed", extra={"fields": {"error": str(exc)}})
        return ErrorCode.SERVICE_UNAVAILABLE
    return grant, None


async def _take_over(
    gateway: Gateway, *, origin: str, resume_token: str, attempt: str
) -> tuple[CallGrant, Resumption] | ErrorCode:
    """Continue a call another (draining) instance offered (`Call.hand_off`): the offer is
    reserved for this attempt here, and taken once the call is set up (`_take_handoff`)."""
    client = gateway.state.client
    try:
        offer = await peek_handoff(client, resume_token)
        if offer is None:
            return ErrorCode.TOKEN_INVALID
        if offer["origin"] != origin:
            return ErrorCode.ORIGIN_NOT_ALLOWED
        if not await reserve_handoff(client, resume_token, attempt):
            # Another attempt with this token is under way (one whose client went away
            # holds it for a few seconds at most): try again, the token is still good.
            return ErrorCode.SERVER_BUSY
    except REDIS_ERRORS as exc:
        log.warning("call take-over failed", extra={"fields": {"error": str(exc)}})
        return ErrorCode.SERVICE_UNAVAILABLE
    resumption = Resumption(
        handle=offer["handle"],
        next_seq=int(offer["next_seq"]),
        started_at=float(offer["started_at"]),
        usage={key: int(value) for key, value in offer["usage"].items()},
    )
    return CallGrant.model_validate(offer["grant"]), resumption


async def _take_handoff(gateway: Gateway, resume_token: str) -> ErrorCode | None:
    try:
        if await take_handoff(gateway.state.client, resume_token):
            return None
    except REDIS_ERRORS as exc:
        log.warning("call take-over failed", extra={"fields": {"error": str(exc)}})
        return ErrorCode.SERVICE_UNAVAILABLE
    # The draining instance gave up waiting and ended the call itself.
    return ErrorCode.TOKEN_INVALID


async def _release_handoff(gateway: Gateway, resume_token: str, attempt: str) -> None:
    try:
        await release_handoff(gateway.state.client, resume_token, attempt)
    except REDIS_ERRORS as exc:
        # The reservation lapses by itself within seconds.
        log.warning("call take-over not released", extra={"fields": {"error": str(exc)}})


async def _take_slot(gateway: Gateway, grant: CallGrant, record: CallRecord) -> ErrorCode | None:
    try:
        outcome = await gateway.state.acquire(
            record,
            agent_limit=grant.agent.max_concurrent_calls,
            org_limit=grant.agent.org_max_concurrent_calls,
        )
    except REDIS_ERRORS as exc:
        gateway.deps.metrics.redis_errors.labels(operation="acquire").inc()
        log.warning("call slot not taken", extra={"fields": {"error": str(exc)}})
        return ErrorCode.SERVICE_UNAVAILABLE
    return None if outcome is LeaseOutcome.OK else ErrorCode.CALL_LIMIT_REACHED


async def _release_slot(gateway: Gateway, record: CallRecord) -> None:
    try:
        await gateway.state.release(record)
    except REDIS_ERRORS as exc:
        # The lease lapses by itself within slot_lease_seconds.
        gateway.deps.metrics.redis_errors.labels(operation="release").inc()
        log.warning("call slot release failed", extra={"fields": {"error": str(exc)}})


async def _refuse_call(
    gateway: Gateway,
    ws: web.WebSocketResponse,
    grant: CallGrant,
    code: ErrorCode,
    *,
    moved: bool = False,
) -> None:
    """An origin-verified call that cannot start: tell the widget why, close the call record
    (a moved call's record is the offering instance's, which ends it when the move fails)."""
    gateway.deps.metrics.client_errors.labels(code=code.value).inc()
    close_code = code.spec.close_code or CloseCode.TRY_AGAIN_LATER
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await ws.send_str(error_event(code))
            await ws.send_str(event("session.ended", reason=code.value))
            await ws.close(code=close_code, message=code.value.encode())
    if moved:
        return
    try:
        await gateway.deps.api.end_call(
            grant.call_id,
            duration_ms=0,
            end_reason=code.value,
            usage={"prompt_tokens": 0, "response_tokens": 0, "total_tokens": 0},
        )
    except (ApiUnavailable, ApiRejected) as exc:
        log.error(
            "refused call end not recorded",
            extra={"fields": {"call_id": grant.call_id, "error": str(exc)}},
        )


def _authorised(request: web.Request) -> bool:
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    return any(
        hmac.compare_digest(presented, token.get_secret_value().encode())
        for token in request.app[SETTINGS].internal_tokens
    )


def _unauthorised() -> web.Response:
    return error_response(401, "unauthorized", "send the internal token as a Bearer")


async def list_calls(request: web.Request) -> web.Response:
    """Live calls of every instance (from the Redis registry)."""
    if not _authorised(request):
        return _unauthorised()
    try:
        calls = await list_live_calls(request.app[GATEWAY].state.client)
    except REDIS_ERRORS:
        return _reject(ErrorCode.SERVICE_UNAVAILABLE)
    return web.json_response({"calls": calls})


async def end_call(request: web.Request) -> web.Response:
    """End a live call, whichever instance holds it."""
    if not _authorised(request):
        return _unauthorised()
    call_id = request.match_info["call_id"]
    client = request.app[GATEWAY].state.client
    try:
        live = {call["call_id"] for call in await list_live_calls(client)}
        if call_id not in live:
            return error_response(404, "call_not_found", "no live call with this id")
        await request_call_end(client, call_id, reason="operator")
    except REDIS_ERRORS:
        return _reject(ErrorCode.SERVICE_UNAVAILABLE)
    return web.json_response({"call_id": call_id, "status": "ending"}, status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    if gateway.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        async with asyncio.timeout(2.0):
            await gateway.state.client.ping()
    except (TimeoutError, *REDIS_ERRORS):
        return web.json_response({"status": "redis_unavailable"}, status=503)
    # A full or overloaded instance stays ready: its new calls get `server_busy` at the
    # handshake, and the container healthcheck (this probe) must not make an orchestrator
    # replace a busy gateway. What it says of its load is for `orbisctl doctor`.
    return web.json_response(
        {
            "status": "ready",
            "calls": len(gateway.calls),
            "overloaded": gateway.loop_lag.overloaded,
            "refused_calls": gateway.refused_calls,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request.app[GATEWAY].deps.metrics.registry)
