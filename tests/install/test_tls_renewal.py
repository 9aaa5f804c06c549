"""The install's own certificates: 90-day server certificates from a name-constrained CA,
renewed in place (`tls renew`, `up`) for the same key; operators' certificates untouched."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from orbisctl import doctor, stack, tls
from orbisctl.core.install import open_install
from orbisctl.installer import renew_server_cert
from orbisctl.tls import Pem, issue_server_cert, verify_chain
from tests.install.conftest import DOMAIN
from tests.install.helpers import invoke


def _leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _ca(install: Path) -> Pem:
    return Pem((install / "tls" / "ca.crt").read_bytes(), (install / "tls" / "ca.key").read_bytes())


def _init(root: Path, *args: str) -> Path:
    result = invoke("init", "--dir", str(root), "--non-interactive", *args)
    assert result.exit_code == 0, result.output
    return root


def _make_due(install: Path, *, days: int = 20) -> bytes:
    """Replace tls/server.crt with one from the install CA (same key) ending in `days`."""
    server = install / "tls" / "server.crt"
    chain = issue_server_cert(
        _ca(install),
        tls.server_names("localhost"),
        days=days,
        key=(install / "tls" / "server.key").read_bytes(),
    ).cert
    server.write_bytes(chain)
    return chain


def test_init_issues_a_90_day_server_certificate(default_install: Path) -> None:
    leaf = _leaf(default_install / "tls" / "server.crt")
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=90, minutes=5)
    assert (
        verify_chain(
            (default_install / "tls" / "server.crt").read_bytes(),
            _ca(default_install).cert,
            "localhost",
        )
        is None
    )


def test_the_install_ca_is_constrained_to_the_install_names(tmp_path: Path) -> None:
    install = _init(tmp_path / "i", "--domain", DOMAIN)
    ca = x509.load_pem_x509_certificate((install / "tls" / "ca.crt").read_bytes())
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    permitted = constraints.value.permitted_subtrees
    assert permitted is not None
    assert {n.value for n in permitted if isinstance(n, x509.DNSName)} == {
        DOMAIN,
        "localhost",
        "emulator",
    }
    assert {str(n.value) for n in permitted if isinstance(n, x509.IPAddress)} == {
        "127.0.0.0/8",
        "::1/128",
    }
    chain = (install / "tls" / "server.crt").read_bytes()
    ca_pem = _ca(install).cert
    for name in (DOMAIN, "localhost", "127.0.0.1", "::1"):
        assert verify_chain(chain, ca_pem, name) is None, name
    emulator = (install / "tls" / "emulator.crt").read_bytes()
    assert verify_chain(emulator, ca_pem, "emulator") is None
    # Even with tls/ca.key in hand, a certificate for another site is refused by clients.
    forged = issue_server_cert(_ca(install), ["bank.example.org", "10.1.2.3"]).cert
    problem = verify_chain(forged, ca_pem, "bank.example.org")
    assert problem is not None and "name constraint" in problem
    assert verify_chain(forged, ca_pem, "10.1.2.3") is not None


def test_an_install_on_an_ip_address_may_sign_for_that_address(tmp_path: Path) -> None:
    install = _init(tmp_path / "i", "--domain", "192.0.2.10")
    constraints = tls.ca_name_constraints("192.0.2.10")
    assert constraints.permitted_subtrees is not None
    assert x509.IPAddress(ipaddress.ip_network("192.0.2.10/32")) in constraints.permitted_subtrees
    chain = (install / "tls" / "server.crt").read_bytes()
    assert verify_chain(chain, _ca(install).cert, "192.0.2.10") is None


def test_renew_replaces_a_due_certificate_in_place_for_the_same_key(
    default_install: Path,
) -> None:
    server = default_install / "tls" / "server.crt"
    key_before = (default_install / "tls" / "server.key").read_bytes()
    fresh = renew_server_cert(default_install)
    assert not fresh.renewed and fresh.reason == "not due yet"
    old = _make_due(default_install, days=20)
    inode = server.stat().st_ino
    renewal = renew_server_cert(default_install)
    assert renewal.renewed
    assert server.read_bytes() != old
    # The same inode: nginx's single-file bind mount sees the new content.
    assert server.stat().st_ino == inode
    assert not (default_install / "tls" / "server.crt.new").exists()
    assert (default_install / "tls" / "server.key").read_bytes() == key_before
    leaf = _leaf(server)
    left = leaf.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89) < left <= timedelta(days=90)
    assert renewal.expires == leaf.not_valid_after_utc
    assert verify_chain(server.read_bytes(), _ca(default_install).cert, "localhost") is None
    assert not renew_server_cert(default_install).renewed  # due again only in 60 days
    later = datetime.now(UTC) + timedelta(days=61)
    assert renew_server_cert(default_install, now=later).renewed


def test_renew_replaces_an_825_day_certificate_of_an_earlier_release(
    default_install: Path,
) -> None:
    _make_due(default_install, days=825)
    assert renew_server_cert(default_install).renewed
    leaf = _leaf(default_install / "tls" / "server.crt")
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=90, minutes=5)


def test_renew_never_touches_the_operators_certificate(
    full_install: Path, default_install: Path, tmp_path: Path
) -> None:
    """tls.mode files, and a certificate the install CA did not issue copied over by hand."""
    before = (full_install / "tls" / "server.crt").read_bytes()
    renewal = renew_server_cert(full_install, force=True)
    assert not renewal.renewed and "operator" in renewal.reason
    assert (full_install / "tls" / "server.crt").read_bytes() == before
    foreign = (full_install / "tls" / "server.crt").read_bytes()
    (default_install / "tls" / "server.crt").write_bytes(foreign)
    renewal = renew_server_cert(default_install, force=True)
    assert not renewal.renewed and "not issued by the install CA" in renewal.reason
    assert (default_install / "tls" / "server.crt").read_bytes() == foreign


def test_a_renewal_interrupted_half_way_is_finished(default_install: Path) -> None:
    server = default_install / "tls" / "server.crt"
    staged = default_install / "tls" / "server.crt.new"
    complete = server.read_bytes()
    staged.write_bytes(complete)
    server.write_bytes(complete[:100])  # the crash came during the in-place write
    renewal = renew_server_cert(default_install)
    assert not renewal.renewed
    assert server.read_bytes() == complete
    assert not staged.exists()


def test_a_bind_mounted_certificate_shows_the_renewed_one(
    default_install: Path, tmp_path: Path
) -> None:
    """nginx mounts tls/server.crt on its own (a single-file bind mount holds the inode): the
    renewed certificate must appear through such a mount, as it would in the container."""
    _make_due(default_install)
    target = tmp_path / "mounted.crt"
    target.write_bytes(b"")
    orbisctl = Path(sys.executable).parent / "orbisctl"
    script = (
        f'mount --bind "{default_install}/tls/server.crt" "{target}" && '
        f'"{orbisctl}" tls renew --dir "{default_install}" >/dev/null && cat "{target}"'
    )
    unshare = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    result = subprocess.run(
        [*unshare, "sh", "-c", script],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (default_install / "tls" / "server.crt").read_bytes()
    leaf = x509.load_pem_x509_certificates(result.stdout)[0]
    assert leaf.not_valid_after_utc - datetime.now(UTC) > timedelta(days=89)


def test_tls_renew_command_and_schedule(default_install: Path, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    result = invoke("tls", "renew", "--dir", str(default_install), env=env)
    assert result.exit_code == 0
    assert "not renewed (not due yet): valid until" in result.output
    _make_due(default_install)
    result = invoke("tls", "renew", "--dir", str(default_install), env=env)
    assert result.exit_code == 0
    assert "renewed tls/server.crt: valid until" in result.output
    assert "nginx is not running" in result.output
    cron = tmp_path / "cron.d"
    cron.mkdir()
    result = invoke(
        "tls", "schedule", "--dir", str(default_install), "--cron", "--cron-dir", str(cron)
    )
    assert result.exit_code == 0, result.output
    (entry,) = cron.iterdir()
    line = entry.read_text().splitlines()[-1]
    assert line.startswith("30 4 * * * root ")
    assert f"tls renew --dir {default_install}" in line


def test_up_renews_a_due_certificate_before_it_starts_anything(
    default_install: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Started(Exception):
        pass

    def stop(*_: Any) -> None:
        raise Started

    monkeypatch.setattr(stack.engine, "connect", lambda: object())
    monkeypatch.setattr(stack, "compose_model", lambda _: stack.ComposeModel({}))
    monkeypatch.setattr(stack, "image_refs", stop)
    _make_due(default_install)
    with pytest.raises(Started):
        stack.up(open_install(default_install))
    leaf = _leaf(default_install / "tls" / "server.crt")
    assert leaf.not_valid_after_utc - datetime.now(UTC) > timedelta(days=89)


def test_doctor_says_when_the_certificate_expires_and_who_renews_it(
    default_install: Path, full_install: Path
) -> None:
    (ours,) = doctor.check_certificate(doctor.DoctorContext(open_install(default_install)))
    assert ours.verdict is doctor.Verdict.PASS
    expiry = _leaf(default_install / "tls" / "server.crt").not_valid_after_utc
    assert f"valid until {expiry:%Y-%m-%d}" in ours.detail
    assert f"renewed from {expiry - timedelta(days=30):%Y-%m-%d}" in ours.detail
    (theirs,) = doctor.check_certificate(doctor.DoctorContext(open_install(full_install)))
    assert "operator's own" in theirs.detail
    _make_due(default_install, days=825)
    (long,) = doctor.check_certificate(doctor.DoctorContext(open_install(default_install)))
    assert long.verdict is doctor.Verdict.WARN
    assert "tls renew" in long.fix
