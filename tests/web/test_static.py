"""How the install's nginx (the rendered template) serves the widget and dashboard files."""

from __future__ import annotations

import re
import ssl
import urllib.request
from email.message import Message

import pytest

from tests.web.support import INSTALL_HOST, WEB_ROOT, Nginx, TlsFiles

pytestmark = pytest.mark.integration


def fetch(nginx: Nginx, tls: TlsFiles, path: str) -> tuple[int, Message, bytes]:
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    # Connect to loopback but name the install's host, as a browser would (SNI, Host, cert).
    context.check_hostname = True
    request = urllib.request.Request(f"https://127.0.0.1:{nginx.port}{path}")
    request.add_header("Host", f"{INSTALL_HOST}:{nginx.port}")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
        return response.status, response.headers, response.read()


@pytest.mark.parametrize("path", ["/widget.js", "/widget-audio.js"])
def test_widget_files_load_on_any_origin_and_cache_briefly(
    static_nginx: Nginx, tls: TlsFiles, path: str
) -> None:
    status, headers, body = fetch(static_nginx, tls, path)
    assert status == 200
    assert body == (WEB_ROOT / path.lstrip("/")).read_bytes()
    assert headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
    # An AudioWorklet module from another origin is fetched in CORS mode.
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert headers["Cache-Control"] == "max-age=300"
    # The server-wide security headers are still there.
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "max-age=63072000" in headers["Strict-Transport-Security"]


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/app.js", "/dashboard/style.css", "/"])
def test_dashboard_files_revalidate_and_carry_the_csp(
    static_nginx: Nginx, tls: TlsFiles, path: str
) -> None:
    status, headers, _ = fetch(static_nginx, tls, path)
    assert status == 200
    assert headers["Cache-Control"] == "no-cache"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["ETag"]


def test_widget_is_small_and_talks_only_to_its_own_server() -> None:
    widget = (WEB_ROOT / "widget.js").read_text()
    worklet = (WEB_ROOT / "widget-audio.js").read_text()
    assert len(widget.encode()) + len(worklet.encode()) < 30 * 1024
    # No absolute URLs (but the SVG namespace and the usage example in the header comment):
    # every request goes to the origin widget.js came from.
    for source in (widget, worklet):
        stripped = source.replace("http://www.w3.org/2000/svg", "")
        stripped = stripped.replace("https://voice.example.com/widget.js", "")
        assert not re.findall(r"(?:https?|wss?)://", stripped)
