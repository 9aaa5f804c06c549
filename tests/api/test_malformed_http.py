"""Requests too malformed for the application (aiohttp refuses them while parsing) still get
the one JSON error shape and one log line, never plain text and a traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from yarl import URL

from tests.api.fixtures import ApiHarness

pytestmark = pytest.mark.integration


async def raw_exchange(api: ApiHarness, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given; the status, headers and body of the answer."""
    url = URL(api.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Thing: a\x00b\r\n\r\n",
        b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: api\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",
        b"G\x01T /healthz HTTP/1.1\r\nHost: api\r\n\r\n",
    ],
    ids=["nul-in-header", "8k-path", "9k-header", "bad-method"],
)
async def test_malformed_request_gets_the_json_error_shape_and_no_traceback(
    api: ApiHarness, request_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        status, headers, body = await raw_exchange(api, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request"
    assert error["message"].startswith("the HTTP request is malformed")
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.name == "runtime.api"] == [
        "malformed HTTP request"
    ]
    # The server is unharmed.
    await api.call("GET", "/healthz", expect=200)
