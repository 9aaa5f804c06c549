"""Every URL `orbisctl up` prints answers 200 through the install's nginx, with the real API
behind it: the site, the dashboard, the widget, the API (an index of links), its reference
page; and the OpenAPI document the index links to (issue 15 item 6: the printed API URL
answered 404 and the document was unreachable through nginx)."""

from __future__ import annotations

import json
import ssl
import urllib.request
from urllib.parse import urlsplit

import pytest

from orbisctl.core.config import OrbisConfig, PortsConfig
from orbisctl.stack import urls
from tests.web.stack import Stack
from tests.web.support import INSTALL_HOST, TlsFiles

pytestmark = pytest.mark.integration


def _get(stack: Stack, tls: TlsFiles, url: str) -> tuple[int, str, bytes]:
    """GET `url` (a public URL of the install) from loopback, naming the install's host."""
    parts = urlsplit(url)
    assert parts.hostname == INSTALL_HOST and parts.port == stack.nginx.port, url
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    request = urllib.request.Request(f"https://127.0.0.1:{parts.port}{parts.path}")
    request.add_header("Host", parts.netloc)
    with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
        return response.status, response.headers.get_content_type(), response.read()


def test_every_url_up_prints_answers_200_through_nginx(stack: Stack, tls: TlsFiles) -> None:
    config = OrbisConfig(
        domain=INSTALL_HOST, ports=PortsConfig(http=stack.nginx.port + 1, https=stack.nginx.port)
    )
    printed = urls(config)
    assert {"api", "api docs"} <= set(printed)
    for name, url in printed.items():
        status, _, _ = _get(stack, tls, url)
        assert status == 200, (name, url)
    _, kind, body = _get(stack, tls, printed["api"])
    assert kind == "application/json"
    index = json.loads(body)
    # The API links the public addresses (ORBIS_PUBLIC_URL is this nginx).
    status, kind, document = _get(stack, tls, index["openapi"])
    assert (status, kind) == (200, "application/json")
    assert json.loads(document)["openapi"] == "3.1.0"
    status, kind, page = _get(stack, tls, index["docs"])
    assert (status, kind) == (200, "text/html")
    assert b"create_agent" in page
