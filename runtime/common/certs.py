"""Certificate building blocks shared by the installer's CA (orbisctl.tls) and the emulator's
test certificate (runtime.emulator.testing): EC P-256 keys, PEM keys, subject alternative
names, and a self-signed CA certificate.

It lives in runtime/ because the emulator's test helpers ship in the runtime package; orbisctl
already depends on runtime.common.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SigningKey = ec.EllipticCurvePrivateKey

# Certificates start a little in the past so a peer whose clock lags a few minutes accepts them.
BACKDATE = timedelta(minutes=5)


def new_key() -> SigningKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def subject_alt_names(names: Iterable[str]) -> x509.SubjectAlternativeName:
    """IP addresses as IP SANs, anything else as DNS names; order kept, repeats dropped."""
    general: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def self_signed_ca(
    key: SigningKey,
    name: x509.Name,
    *,
    days: int,
    names: Iterable[str] = (),
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """A CA certificate signed by its own key. With `names` it also carries those SANs, so it
    can serve TLS itself and be its own trust anchor (the emulator's test certificate).
    `extensions` are further (extension, critical) pairs, such as name constraints."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    san = list(names)
    if san:
        builder = builder.add_extension(subject_alt_names(san), critical=False)
    return builder.sign(key, hashes.SHA256())
