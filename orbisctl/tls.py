"""Certificates: the install's own CA and the certificates it issues, and checks of the
operator's own certificate files (`tls.mode: files`).

Everything here returns PEM bytes or raises; writing files is the installer's job.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from orbisctl.core.errors import UserError
from runtime.common.certs import BACKDATE, key_pem, new_key, self_signed_ca, subject_alt_names

CA_DAYS = 3650
# The server certificate nginx serves: Mozilla's profiles want at most 366 days (sslyze's
# intermediate check fails above), the CA/Browser Forum is going down to 47; `up` and the
# `tls renew` timer issue a new one once fewer than RENEW_DAYS remain, so 90 is plenty.
SERVER_DAYS = 90
RENEW_DAYS = 30
# The emulator's certificate is reached only by the gateway on the internal network, and the
# emulator loads it at start (a renewal would need a restart): it keeps the longest lifetime
# clients accept from a private CA.
EMULATOR_DAYS = 825
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


def ca_name_constraints(domain: str) -> x509.NameConstraints:
    """What the install CA may sign for: the install's domain (and names under it), the
    loopback (`localhost`, 127.0.0.0/8, ::1) for checks on the host, and `emulator`, the
    internal name of the Gemini emulator. A CA an operator trusts in a browser can then not
    be used to impersonate any other site, even if tls/ca.key leaks."""
    dns = dict.fromkeys(["localhost", "emulator"])
    ips = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    try:
        address = ipaddress.ip_address(domain)
    except ValueError:
        dns = {domain: None, **dns}
    else:
        network = ipaddress.ip_network(address)
        if network not in ips:
            ips.insert(0, network)
    permitted: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    permitted += [x509.IPAddress(network) for network in ips]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


def new_ca(domain: str) -> Pem:
    """A self-signed CA for this install, constrained to the install's names (see
    `ca_name_constraints`); it signs nginx's and the emulator's certificates."""
    key = new_key()
    cert = self_signed_ca(
        key,
        _name(f"OrbisVoice CA {domain}"),
        days=CA_DAYS,
        # RFC 5280 4.2.1.10: conforming CAs mark name constraints critical.
        extensions=[(ca_name_constraints(domain), True)],
    )
    return Pem(cert=cert.public_bytes(serialization.Encoding.PEM), key=key_pem(key))


def issue_server_cert(
    ca: Pem, names: list[str], *, days: int = SERVER_DAYS, key: bytes | None = None
) -> Pem:
    """A TLS server certificate signed by the install CA, valid `days`; the chain is leaf
    first, then CA. With `key` (PEM), the certificate is for that key instead of a new one."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise UserError("the install CA key (tls/ca.key) is not the EC key `init` made")
    if key is None:
        leaf_key = new_key()
    else:
        loaded = serialization.load_pem_private_key(key, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise UserError("tls/server.key is not the EC key `init` made")
        leaf_key = loaded
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
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
    return Pem(cert=chain, key=key if key is not None else key_pem(leaf_key))


def issued_by(chain_pem: bytes, ca_pem: bytes) -> bool:
    """True when the chain's leaf was signed by the install CA (so `tls renew` may replace
    it); an operator's own certificate, even one copied over tls/server.crt, is not."""
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def expires(chain_pem: bytes) -> datetime:
    """When the chain's leaf certificate stops being valid (UTC)."""
    return x509.load_pem_x509_certificates(chain_pem)[0].not_valid_after_utc


def verify_chain(chain_pem: bytes, ca_pem: bytes, name: str) -> str | None:
    """Why a client trusting only the install CA would refuse the chain for `name` (a DNS
    name or an IP address), with the CA's name constraints applied; None when it accepts."""
    try:
        subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = x509.DNSName(name)
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
    verifier = (
        PolicyBuilder()
        .store(Store([x509.load_pem_x509_certificate(ca_pem)]))
        .build_server_verifier(subject)
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        return str(exc)
    return None


def due_for_renewal(chain_pem: bytes, now: datetime | None = None) -> bool:
    """True when the leaf has fewer than RENEW_DAYS left (or has expired), or was issued for
    longer than SERVER_DAYS (the 825-day certificates of earlier releases)."""
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    lifespan = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    if lifespan > timedelta(days=SERVER_DAYS) + BACKDATE:
        return True
    return leaf.not_valid_after_utc - (now or _now()) < timedelta(days=RENEW_DAYS)


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
