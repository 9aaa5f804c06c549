"""Running a tenant's tool: POST the arguments to its HTTP webhook and return a clean result.

The webhook gets `{"call_id", "agent_id", "tool", "arguments"}` and answers with any JSON
value, which becomes the tool's result. The call is signed: `X-Orbis-Timestamp: <unix
seconds>` and `X-Orbis-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body, keyed by
the agent's webhook secret>`, so the webhook can refuse forged and replayed calls. Every failure (timeout, error status, oversize or
non-JSON answer, unreachable or forbidden address) becomes `{"ok": false, "error": …}` for
the model; none is an API error.

Unless private networks are allowed, webhooks may resolve only to public addresses: the
check sits in the resolver, so it applies to the address actually connected to (a host
name cannot pass the check and then resolve elsewhere).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from runtime.api.models.internal import ToolError, ToolResultOut

_CHUNK = 16 * 1024


class ForbiddenAddressError(OSError):
    pass


def _is_public(address: str) -> bool:
    return ipaddress.ip_address(address).is_global


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the default resolver, dropping every non-public address."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = [
            r for r in await self._inner.resolve(host, port, family) if _is_public(r["host"])
        ]
        if not results:
            raise ForbiddenAddressError(f"{host} resolves to no public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


def webhook_session(*, allow_private_networks: bool) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        resolver=None if allow_private_networks else PublicOnlyResolver(), limit=100
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)


def signature_headers(secret: str, body: bytes, *, timestamp: int) -> dict[str, str]:
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"X-Orbis-Timestamp": str(timestamp), "X-Orbis-Signature": f"sha256={digest}"}


def _failure(code: str, message: str) -> ToolResultOut:
    return ToolResultOut(ok=False, error=ToolError(code=code, message=message))


async def call_webhook(
    session: aiohttp.ClientSession,
    tool: dict[str, Any],
    *,
    call_id: str,
    agent_id: str,
    webhook_secret: str,
    arguments: dict[str, Any],
    max_response_bytes: int,
    allow_private_networks: bool,
) -> ToolResultOut:
    url = str(tool["url"])
    host = urlsplit(url).hostname or ""
    if not allow_private_networks and _is_ip_literal(host) and not _is_public(host):
        return _failure("tool_forbidden_address", "the webhook address is not public")
    payload = {
        "call_id": call_id,
        "agent_id": agent_id,
        "tool": tool["name"],
        "arguments": arguments,
    }
    request_body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Orbis-Call-Id": call_id,
        **signature_headers(webhook_secret, request_body, timestamp=int(time.time())),
    }
    try:
        async with asyncio.timeout(float(tool.get("timeout_seconds", 10.0))):
            async with session.post(
                url, data=request_body, headers=headers, allow_redirects=False
            ) as response:
                if response.status >= 300:
                    return _failure(
                        "tool_http_error", f"the webhook answered HTTP {response.status}"
                    )
                if (response.content_length or 0) > max_response_bytes:
                    return _oversize(max_response_bytes)
                body = bytearray()
                async for chunk in response.content.iter_chunked(_CHUNK):
                    body.extend(chunk)
                    if len(body) > max_response_bytes:
                        return _oversize(max_response_bytes)
    except TimeoutError:
        return _failure("tool_timeout", "the webhook did not answer in time")
    except (aiohttp.ClientError, OSError) as exc:
        # aiohttp wraps resolver errors in ClientConnectorDNSError (`os_error` is ours).
        if isinstance(exc, ForbiddenAddressError) or isinstance(
            getattr(exc, "os_error", None), ForbiddenAddressError
        ):
            return _failure("tool_forbidden_address", "the webhook address is not public")
        return _failure(
            "tool_unreachable", f"the webhook could not be reached ({type(exc).__name__})"
        )
    try:
        result = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _failure("tool_bad_response", "the webhook's answer is not JSON")
    return ToolResultOut(ok=True, result=result)


def _oversize(limit: int) -> ToolResultOut:
    return _failure("tool_response_too_large", f"the webhook's answer exceeds {limit} bytes")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
