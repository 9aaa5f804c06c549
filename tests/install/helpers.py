"""Helpers for the install tests: operator certificate chains, directory snapshots, CLI runs."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from typer.testing import CliRunner, Result

from orbisctl.cli import app


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run orbisctl in-process; core bugs raise instead of hiding in the result."""
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under root with its bytes (None for directories) and permission bits."""
    if not root.exists():
        return {}
    found: dict[str, tuple[bytes | None, int]] = {}
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        data = path.read_bytes() if path.is_file() else None
        found[str(path.relative_to(root))] = (data, mode)
    return found


@dataclass(frozen=True)
class Chain:
    """An operator's certificate files: CA -> intermediate -> leaf."""

    cert_file: Path  # leaf, then intermediate
    key_file: Path
    leaf: bytes
    intermediate: bytes
    root: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    names: list[str] = [],  # noqa: B006 - never mutated
    not_after: datetime | None = None,
    ocsp_url: str | None = None,
) -> bytes:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(not_after or now + timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        general: list[x509.GeneralName] = []
        for name in names:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                general.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    if ocsp_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_chain(
    directory: Path,
    *,
    names: list[str],
    expired: bool = False,
    ocsp_url: str | None = None,
    reverse_order: bool = False,
) -> Chain:
    """Write an operator's cert chain (leaf first unless `reverse_order`) and key files."""
    directory.mkdir(parents=True, exist_ok=True)
    root_key, inter_key, leaf_key = _key(), _key(), _key()
    root = _cert("Test Root", root_key, "Test Root", root_key, ca=True)
    intermediate = _cert("Test Intermediate", inter_key, "Test Root", root_key, ca=True)
    not_after = datetime.now(UTC) - timedelta(days=1) if expired else None
    leaf = _cert(
        names[0],
        leaf_key,
        "Test Intermediate",
        inter_key,
        ca=False,
        names=names,
        not_after=not_after,
        ocsp_url=ocsp_url,
    )
    cert_file = directory / "fullchain.pem"
    cert_file.write_bytes(intermediate + leaf if reverse_order else leaf + intermediate)
    key_file = directory / "privkey.pem"
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return Chain(cert_file, key_file, leaf, intermediate, root)


def other_key(directory: Path) -> Path:
    """A valid private key that belongs to no certificate here."""
    path = directory / "other.key"
    path.write_bytes(
        _key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def secret_values(install: Path) -> list[str]:
    """Every secret value of an install: secret files, JWT key secrets, private key lines."""
    values = []
    for path in sorted((install / "secrets").iterdir()):
        if path.name == "jwt_keys.json":
            ring = json.loads(path.read_text())
            values += [key["secret"] for key in ring["keys"]]
        else:
            values += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for key_file in sorted((install / "tls").glob("*.key")):
        values += [line for line in key_file.read_text().splitlines() if "-----" not in line]
    assert values, "the install holds no secrets to look for"
    return [value for value in values if len(value) >= 16]


# Host names of the stack's services, which nginx resolves when it loads its config.
SERVICE_NAMES = "api gateway emulator referrals"


def nginx_conf_dir(install: Path, work: Path) -> Path:
    """A copy of the container's /etc/nginx: the rendered config, the certificate, mime.types."""
    conf = work / "etc-nginx"
    (conf / "tls").mkdir(parents=True)
    (conf / "nginx.conf").symlink_to(install / "nginx" / "nginx.conf")
    (conf / "snippets").symlink_to(install / "nginx" / "snippets")
    (conf / "tls" / "server.crt").symlink_to(install / "tls" / "server.crt")
    (conf / "tls" / "server.key").symlink_to(install / "tls" / "server.key")
    (conf / "mime.types").symlink_to("/etc/nginx/mime.types")
    return conf


def run_probe(module: str, *args: str) -> Any:
    """Run `python -m module args` in a private mount and network namespace (where the
    rendered configs' fixed ports are free and /etc/hosts may be bind-mounted) and return the
    JSON it prints."""
    unshare = ["unshare", "--mount", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    result = subprocess.run(
        [*unshare, sys.executable, "-m", module, *args],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
