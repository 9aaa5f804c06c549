"""Real pieces for the browser tests: a test CA that Chromium trusts, an nginx TLS front, a
speech WAV for the fake microphone, and the Chromium launch flags.

Host names: the install answers on `voice.orbis.test`; tenant pages live on
`shop.orbis.test` (an allowed origin) and `elsewhere.orbis.test` (not allowed). Chromium maps
every `*.orbis.test` name to 127.0.0.1 with --host-resolver-rules, so no /etc/hosts edits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.services import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
WEB_ROOT = REPO / "runtime" / "web"
ARTIFACTS = REPO / "test-artifacts" / "web"

INSTALL_HOST = "voice.orbis.test"
TENANT_HOST = "shop.orbis.test"
STRANGER_HOST = "elsewhere.orbis.test"


@dataclass(frozen=True)
class TestTLS:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_tls(directory: Path) -> TestTLS:
    """A throw-away CA and a server certificate for *.orbis.test, localhost and 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OrbisVoice browser-test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName(INSTALL_HOST),
        x509.DNSName("*.orbis.test"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, INSTALL_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls = TestTLS(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    tls.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    tls.server_cert.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    tls.server_key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
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

# How the install serves the widget and dashboard. The same headers are what the issue-2
# nginx template must send (see the web area's report):
# - widget.js and its worklet load on *tenants'* pages: any origin may fetch them (the
#   worklet is a module script, so cross-origin loading needs CORS), a COEP page may embed
#   them (CORP cross-origin), and they are cached briefly because the URL is not versioned.
# - the dashboard gets a strict CSP: everything from its own origin, nothing inline.
WIDGET_HEADERS = """
        add_header Cache-Control "public, max-age=300" always;
        add_header Access-Control-Allow-Origin "*" always;
        add_header Cross-Origin-Resource-Policy "cross-origin" always;
        add_header X-Content-Type-Options "nosniff" always;
"""
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
DASHBOARD_HEADERS = f"""
        add_header Cache-Control "no-cache" always;
        add_header Content-Security-Policy "{DASHBOARD_CSP}" always;
        add_header X-Content-Type-Options "nosniff" always;
        add_header Referrer-Policy "strict-origin-when-cross-origin" always;
        add_header Permissions-Policy "microphone=(self)" always;
"""


@dataclass(frozen=True)
class Upstreams:
    """Loopback ports of the API and gateway processes nginx proxies to (0: none)."""

    api: int = 0
    gateway: int = 0


def nginx_config(base: Path, *, port: int, tls: TestTLS, pages: Path, upstreams: Upstreams) -> str:
    user = "user root root;" if os.geteuid() == 0 else ""
    # An unused loopback port stands in for a missing upstream: nginx answers 502.
    api = upstreams.api or 9
    gateway = upstreams.gateway or 9
    return f"""
{user}
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {base}/access.log;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    ssl_certificate {tls.server_cert};
    ssl_certificate_key {tls.server_key};
    ssl_protocols TLSv1.2 TLSv1.3;

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {INSTALL_HOST};
        root {WEB_ROOT};

        location = /widget.js {{ {WIDGET_HEADERS} }}
        location = /widget-audio.js {{ {WIDGET_HEADERS} }}
        location /dashboard/ {{
            index index.html;
            {DASHBOARD_HEADERS}
        }}
        location /api/ {{
            proxy_pass http://127.0.0.1:{api};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
        }}
        location /ws/ {{
            proxy_pass http://127.0.0.1:{gateway};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 120s;
        }}
        location / {{ {DASHBOARD_HEADERS} }}
    }}

    # The tenants' own websites.
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {TENANT_HOST} {STRANGER_HOST};
        root {pages};
        add_header Cache-Control "no-store" always;
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    base: Path
    process: subprocess.Popen[bytes]

    def url(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def log(self) -> str:
        return (self.base / "error.log").read_text(errors="replace")


@contextlib.contextmanager
def nginx_server(tls: TestTLS, pages: Path, upstreams: Upstreams) -> Iterator[Nginx]:
    base = Path(tempfile.mkdtemp(prefix="orbis-web-nginx-"))
    port = free_port()
    conf = base / "nginx.conf"
    conf.write_text(nginx_config(base, port=port, tls=tls, pages=pages, upstreams=upstreams))
    check = subprocess.run(
        ["nginx", "-t", "-q", "-p", str(base), "-c", str(conf)],
        check=False,
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise RuntimeError(f"test nginx config is invalid: {check.stderr.strip()}")
    process = subprocess.Popen(
        ["nginx", "-p", str(base), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield Nginx(port, base, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
