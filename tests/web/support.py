"""Real pieces for the browser tests: a test CA that Chromium trusts, the install's rendered
nginx config (TLS) serving runtime/web, a second nginx for tenants' websites, a speech WAV for
the fake microphone, and the Chromium launch flags.

Host names: the install answers on `voice.orbis.test`; tenant pages live on
`shop.orbis.test` (an allowed origin) and `elsewhere.orbis.test` (not allowed), on the tenant
nginx's own port. Chromium maps every `*.orbis.test` name to 127.0.0.1 with
--host-resolver-rules, so no /etc/hosts edits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from orbisctl.core.config import OrbisConfig, PortsConfig, RateLimitsConfig
from orbisctl.render import (
    API_PORT,
    GATEWAY_PORT,
    MAINTENANCE_FLAG,
    NGINX_HTTP_PORT,
    NGINX_HTTPS_PORT,
    render_stack,
)
from orbisctl.render import WEB_ROOT as RENDER_WEB_ROOT
from orbisctl.tls import issue_server_cert, new_ca
from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
WEB_ROOT = REPO / "runtime" / "web"
ARTIFACTS = REPO / "test-artifacts" / "web"

INSTALL_HOST = "voice.orbis.test"
TENANT_HOST = "shop.orbis.test"
STRANGER_HOST = "elsewhere.orbis.test"


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A throw-away install CA and its server certificate for *.orbis.test, localhost and
    127.0.0.1, made the way `orbisctl init` makes them (orbisctl.tls)."""
    # The install CA's name constraints permit its domain and the names under it.
    ca = new_ca("orbis.test")
    server = issue_server_cert(ca, [INSTALL_HOST, "*.orbis.test", "localhost", "127.0.0.1"])
    tls = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    tls.ca_cert.write_bytes(ca.cert)
    tls.server_cert.write_bytes(server.cert)
    tls.server_key.write_bytes(server.key)
    tls.server_key.chmod(0o600)
    return tls


def trusting_home(directory: Path, ca_cert: Path) -> Path:
    """A HOME whose NSS database (what Chromium on Linux trusts) holds the test CA.

    Real trust, not --ignore-certificate-errors: a wrong certificate still fails the test.
    """
    if shutil.which("certutil") is None:
        raise RuntimeError(
            "certutil is missing: install Debian's libnss3-tools (the browser tests make "
            "Chromium trust their own CA with it)"
        )
    nssdb = directory / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{nssdb}", "--empty-password"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{nssdb}", "-n", "orbis-test-ca", "-t", "C,,", "-i", ca_cert],
        check=True,
        capture_output=True,
    )
    return directory


def make_speech_wav(path: Path, text: str) -> Path:
    """Speech from espeak-ng, as 48 kHz mono PCM16 (what a browser microphone delivers)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, text], check=True)
    # Trailing silence so the model's voice-activity detection sees the end of the turn.
    subprocess.run(
        ["sox", raw, "-r", "48000", "-c", "1", "-b", "16", path, "pad", "0.3", "1.5"],
        check=True,
    )
    raw.unlink()
    return path


def chromium_args(wav: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--host-resolver-rules=MAP *.orbis.test 127.0.0.1",
    ]


# --- nginx --------------------------------------------------------------------------------


# The browser tests log in a dozen times a minute from one address; the install's default
# (10 logins a minute) would turn them away. Rate limiting has tests of its own.
TEST_RATE_LIMITS = RateLimitsConfig(login_per_minute=600)


@dataclass(frozen=True)
class Upstreams:
    """Loopback ports of the API and the gateway replicas nginx proxies to (none: port 9)."""

    api: int = 0
    gateways: tuple[int, ...] = ()


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(
            f"the rendered nginx.conf changed: expected {old!r} once; update tests/web/support.py"
        )
    return text.replace(old, new)


def install_nginx_files(
    base: Path, *, port: int, http_port: int, tls: TlsFiles, upstreams: Upstreams
) -> Path:
    """The install's real nginx config (`orbisctl render`), pointed at loopback.

    Only what differs between a container and this test is rewritten: listen addresses,
    upstream addresses, the web root (the source tree), and where logs and temp files go.
    An unused loopback port stands in for a missing upstream: nginx answers 502.
    """
    cfg = OrbisConfig(
        domain=INSTALL_HOST,
        ports=PortsConfig(http=http_port, https=port),
        rate_limits=TEST_RATE_LIMITS,
    )
    conf_dir = base / "conf"
    for relative, text in render_stack(cfg).items():
        if relative.parts[0] == "nginx":
            target = conf_dir / relative.relative_to("nginx")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    conf = conf_dir / "nginx.conf"
    text = conf.read_text()
    text = _replace_once(text, f"listen {NGINX_HTTPS_PORT} ssl", f"listen 127.0.0.1:{port} ssl")
    text = _replace_once(text, f"listen {NGINX_HTTP_PORT} ", f"listen 127.0.0.1:{http_port} ")
    text = _replace_once(text, f"server api:{API_PORT};", f"server 127.0.0.1:{upstreams.api or 9};")
    # Like `gateway` resolving to every replica's address in the compose network.
    replicas = "\n        ".join(
        f"server 127.0.0.1:{port} max_fails=0;" for port in upstreams.gateways or (9,)
    )
    text = _replace_once(text, f"server gateway:{GATEWAY_PORT} max_fails=0;", replicas)
    text = _replace_once(text, f"root {RENDER_WEB_ROOT};", f"root {WEB_ROOT};")
    text = text.replace("/tmp/nginx-", f"{base}/tmp-")
    # The maintenance flag lives in the container's tmpfs; here in the nginx's own directory.
    text = text.replace(MAINTENANCE_FLAG, str(Nginx.flag_in(base)))
    Nginx.flag_in(base).parent.mkdir()
    text = _replace_once(
        text, "access_log /dev/stdout orbis;", f"access_log {base}/access.log orbis;"
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}pid {base}/nginx.pid;\n{text}")
    shutil.copy("/etc/nginx/mime.types", conf_dir / "mime.types")
    (conf_dir / "tls").mkdir()
    shutil.copy(tls.server_cert, conf_dir / "tls" / "server.crt")
    shutil.copy(tls.server_key, conf_dir / "tls" / "server.key")
    return conf


def tenant_site_config(base: Path, *, port: int, tls: TlsFiles, pages: Path) -> Path:
    """The tenants' own websites (shop.orbis.test allowed, elsewhere.orbis.test not)."""
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = base / "tenant.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {TENANT_HOST} {STRANGER_HOST};
        ssl_certificate {tls.server_cert};
        ssl_certificate_key {tls.server_key};
        root {pages};
        add_header Cache-Control "no-store" always;
    }}
}}
""")
    return conf


@dataclass
class Nginx:
    port: int
    base: Path
    process: subprocess.Popen[bytes]

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def origin(self, host: str) -> str:
        return f"https://{host}:{self.port}"

    @staticmethod
    def flag_in(base: Path) -> Path:
        return base / "maintenance" / "on"

    @property
    def maintenance_flag(self) -> Path:
        """While this file exists, the install's nginx answers 503 unavailable (maintenance)."""
        return self.flag_in(self.base)


@contextlib.contextmanager
def run_nginx(base: Path, conf: Path, port: int) -> Iterator[Nginx]:
    check = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(base), "-c", str(conf)],
        check=False,
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise RuntimeError(f"nginx config {conf} is invalid: {check.stderr.strip()}")
    process = subprocess.Popen(
        ["nginx", "-p", str(base), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=(base / "stderr.log").open("wb"),
    )
    try:
        wait_for_port(port)
        yield Nginx(port, base, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def install_nginx(tls: TlsFiles, upstreams: Upstreams, *, port: int = 0) -> Iterator[Nginx]:
    with tempfile.TemporaryDirectory(prefix="orbis-web-nginx-") as name:
        base = Path(name)
        port = port or free_port()
        conf = install_nginx_files(
            base, port=port, http_port=free_port(), tls=tls, upstreams=upstreams
        )
        with run_nginx(base, conf, port) as server:
            yield server


@contextlib.contextmanager
def tenant_nginx(tls: TlsFiles, pages: Path) -> Iterator[Nginx]:
    with tempfile.TemporaryDirectory(prefix="orbis-web-tenant-") as name:
        base = Path(name)
        port = free_port()
        conf = tenant_site_config(base, port=port, tls=tls, pages=pages)
        with run_nginx(base, conf, port) as server:
            yield server


def goto(page: Page, url: str) -> None:
    """page.goto, retried when Chromium reports ERR_NETWORK_CHANGED.

    Other processes on a shared test machine (Docker creating bridges) change the host's
    network interfaces; Chromium aborts navigations that are in flight when that happens. As
    root the browser runs in its own network namespace (tests/web/netns.py) and never sees
    that; this covers runs without it.
    """
    for attempt in range(3):
        try:
            page.goto(url)
            return
        except PlaywrightError as exc:
            network_changed = "ERR_NETWORK_CHANGED" in str(exc) or "chrome-error://" in str(exc)
            if not network_changed or attempt == 2:
                raise
