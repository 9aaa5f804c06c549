"""Certificates: the install's own CA and the certificates it issues, and checks of the
operator's own certificate files (`tls.mode: files`).

Everything here returns PEM bytes or raises; writing files is the installer's job.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from orbisctl.errors import UserError
from runtime.common.certs import BACKDATE, key_pem, new_key, self_signed_ca, subject_alt_names

CA_DAYS = 3650
# Browsers refuse leaf certificates valid for longer than 825 days even from private CAs.
LEAF_DAYS = 825
# Names the emulator's certificate must carry: the gateway reaches it as `emulator`; tests and
# `doctor` reach it on the loopback.
EMULATOR_NAMES = ["emulator", "localhost", "127.0.0.1"]


@dataclass(frozen=True)
class Pem:
    """A certificate (or chain, leaf first) and its private key, both PEM."""

    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OrbisVoice appliance"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _now() -> datetime:
    return datetime.now(UTC)


def new_ca(domain: str) -> Pem:
    """A self-signed CA for this install; it signs nginx's and the emulator's certificates."""
    key = new_key()
    cert = self_signed_ca(key, _name(f"OrbisVoice CA {domain}"), days=CA_DAYS)
    return Pem(cert=cert.public_bytes(serialization.Encoding.PEM), key=key_pem(key))


def issue_server_cert(ca: Pem, names: list[str]) -> Pem:
    """A TLS server certificate signed by the install CA; the chain is leaf first, then CA."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise UserError("the install CA key (tls/ca.key) is not the EC key `init` made")
    key = new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(subject_alt_names(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.cert
    return Pem(cert=chain, key=key_pem(key))


def server_names(domain: str) -> list[str]:
    """SANs of the self-signed server certificate: the domain, and the loopback for checks."""
    return [domain, "localhost", "127.0.0.1", "::1"]


def has_ocsp_responder(chain_pem: bytes) -> bool:
    """True when the leaf certificate names an OCSP responder (so nginx can staple)."""
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    try:
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(item.access_method == AuthorityInformationAccessOID.OCSP for item in access)


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def _covers(pattern: str, domain: str) -> bool:
    if pattern == domain:
        return True
    # A wildcard covers exactly one label: *.example.com covers voice.example.com only.
    if pattern.startswith("*."):
        head, _, rest = domain.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def covers_domain(chain_pem: bytes, domain: str) -> bool:
    """True when the leaf certificate of the chain is valid for `domain`."""
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    return any(_covers(name, domain) for name in _dns_names(leaf))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(
            f"cannot read the TLS {what} {path}: {exc.strerror}",
            hint=f"pass a readable PEM file with --tls-{what}",
        ) from None


def check_operator_files(cert_path: Path, key_path: Path, *, domain: str) -> Pem:
    """Load and check the operator's certificate chain and key; return them as PEM.

    Checks: both parse as PEM, the key is not encrypted, the key matches the first (leaf)
    certificate, the leaf is valid now and names the domain, and each following certificate
    issued the one before it (leaf first, then intermediates).
    """
    cert_pem = _read(cert_path, "cert")
    key_pem = _read(key_path, "key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise UserError(
            f"{cert_path} is not a PEM certificate file",
            hint="pass the certificate chain in PEM form (-----BEGIN CERTIFICATE-----)",
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise UserError(
            f"{key_path} is encrypted with a passphrase",
            hint="nginx needs an unencrypted key: openssl pkey -in KEY -out KEY.plain",
        ) from None
    except ValueError:
        raise UserError(
            f"{key_path} is not a PEM private key",
            hint="pass the private key in PEM form (-----BEGIN PRIVATE KEY-----)",
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    key_public = key.public_key().public_bytes(encoding, public)
    matching = [
        i
        for i, c in enumerate(chain)
        if c.public_key().public_bytes(encoding, public) == key_public
    ]
    if not matching:
        raise UserError(
            f"the key {key_path} does not match the certificate {cert_path}",
            hint="pass the key that was generated with this certificate",
        )
    if matching[0] != 0:
        raise UserError(
            f"the certificates in {cert_path} are out of order: the key matches certificate "
            f"{matching[0] + 1}, but the server's own certificate must come first",
            hint="put the leaf certificate first, then each intermediate, in issuing order",
        )
    leaf = chain[0]
    now = _now()
    if leaf.not_valid_after_utc <= now:
        raise UserError(
            f"the certificate {cert_path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
            hint="renew it and pass the new certificate",
        )
    if leaf.not_valid_before_utc > now:
        raise UserError(
            f"the certificate {cert_path} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            hint="check the machine's clock, or wait until it is valid",
        )
    names = _dns_names(leaf)
    if not any(_covers(name, domain) for name in names):
        raise UserError(
            f"the certificate {cert_path} does not cover the domain {domain} "
            f"(it names: {', '.join(names) or 'no DNS names'})",
            hint="pass a certificate for the domain, or set --domain to a name it covers",
        )
    for position, (child, issuer) in enumerate(itertools.pairwise(chain), start=1):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise UserError(
                f"the certificates in {cert_path} are out of order: certificate {position + 1} "
                f"did not issue certificate {position}",
                hint="put the leaf certificate first, then each intermediate, in issuing order",
            ) from None
    return Pem(cert=cert_pem, key=key_pem)
