"""doctor's file checks on a real install: certificate expiry and secret modes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from cryptography import x509

from orbisctl import doctor
from orbisctl.core.install import open_install
from tests.backups.test_retention import fake_backup
from tests.filesystems import tmpfs


def _context(install: Path) -> doctor.DoctorContext:
    return doctor.DoctorContext(open_install(install))


def test_certificate_expiry_passes_warns_and_fails(install: Path) -> None:
    ctx = _context(install)
    cert = x509.load_pem_x509_certificate((install / "tls" / "server.crt").read_bytes())
    expiry = cert.not_valid_after_utc
    (fresh,) = doctor.check_certificate(ctx, now=datetime.now(UTC))
    assert fresh.verdict is doctor.Verdict.PASS
    (soon,) = doctor.check_certificate(ctx, now=expiry - timedelta(days=10))
    assert soon.verdict is doctor.Verdict.WARN
    assert "expires in 9 days" in soon.detail or "expires in 10 days" in soon.detail
    (expired,) = doctor.check_certificate(ctx, now=expiry + timedelta(days=1))
    assert expired.verdict is doctor.Verdict.FAIL
    assert "expired" in expired.detail
    assert expired.fix


def test_secret_modes(install: Path) -> None:
    ctx = _context(install)
    (ok,) = doctor.check_secret_modes(ctx)
    assert ok.verdict is doctor.Verdict.PASS
    (install / "secrets" / "jwt_keys.json").chmod(0o640)
    (install / "tls" / "server.key").chmod(0o644)
    failing = doctor.check_secret_modes(ctx)
    assert {c.verdict for c in failing} == {doctor.Verdict.FAIL}
    details = sorted(c.detail for c in failing)
    assert details == [
        f"secret {install}/secrets/jwt_keys.json is mode 0640, not 0600",
        f"secret {install}/tls/server.key is mode 0644, not 0600",
    ]
    assert failing[0].fix.startswith("chmod 600 ")


def test_gateway_load_from_its_readiness_probe() -> None:
    url = "http://127.0.0.1:4001/readyz: 200"
    calm = doctor.gateway_load_check(
        "orbis-gateway-1",
        url + ': {"status": "ready", "calls": 12, "overloaded": false, "refused_calls": 0}',
        replicas=1,
    )
    assert (calm.verdict, calm.detail) == (doctor.Verdict.PASS, "12 calls, taking new ones")
    hot = doctor.gateway_load_check(
        "orbis-gateway-1",
        url + ': {"status": "ready", "calls": 180, "overloaded": true, "refused_calls": 7}',
        replicas=2,
    )
    assert hot.verdict is doctor.Verdict.WARN
    assert hot.detail.startswith("overloaded now: 180 calls")
    assert "orbisctl scale gateway=3" in hot.fix
    refused = doctor.gateway_load_check(
        "orbis-gateway-1",
        url + ': {"status": "ready", "calls": 3, "overloaded": false, "refused_calls": 7}',
        replicas=1,
    )
    assert refused.verdict is doctor.Verdict.WARN
    assert refused.detail == "3 calls; refused 7 since it started (full or overloaded)"
    # An older gateway's probe says only "200": no figures, said as such.
    unknown = doctor.gateway_load_check("orbis-gateway-1", url, replicas=1)
    assert unknown.verdict is doctor.Verdict.WARN and "no load figures" in unknown.detail


def _backups_at(install: Path, location: Path) -> doctor.DoctorContext:
    config = yaml.safe_load((install / "orbis.yaml").read_text())
    config["backup"]["location"] = str(location)
    (install / "orbis.yaml").write_text(yaml.safe_dump(config))
    return _context(install)


def test_backup_space_warns_when_the_last_backup_would_not_fit(
    install: Path, tmp_path: Path
) -> None:
    (roomy,) = doctor.check_backup_space(_context(install))
    assert roomy.verdict is doctor.Verdict.PASS and "free on" in roomy.detail
    with tmpfs(tmp_path / "small", size="64k") as small:
        backup_id = fake_backup(small, datetime(2026, 1, 1, 3, tzinfo=UTC))
        (small / backup_id / "database.pgdump.enc").write_bytes(b"x" * 40 * 1024)
        (tight,) = doctor.check_backup_space(_backups_at(install, small))
        assert tight.verdict is doctor.Verdict.WARN, tight
        assert f"the last backup ({backup_id}) took 40.5 KiB" in tight.detail
        assert "the next one may not fit" in tight.detail
        assert f"df -h {small}" in tight.fix and "backup.location" in tight.fix
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        (refused,) = doctor.check_backup_space(_backups_at(install, read_only / "backups"))
        assert refused.verdict is doctor.Verdict.FAIL
        assert refused.detail == f"{read_only} is on a read-only file system"
        assert "remount it read-write" in refused.fix


def test_doctor_runs_the_backup_space_check() -> None:
    assert doctor.check_backup_space in doctor.checks()
