"""`orbisctl doctor` warns about secrets overdue for rotation and an unfinished rotation."""

from __future__ import annotations

import os
import time
from pathlib import Path

from orbisctl import doctor
from orbisctl.core.install import open_install
from orbisctl.rotation import core
from orbisctl.rotation.strategies import SecretKind


def test_overdue_secrets_and_an_unfinished_rotation_warn(install: Path) -> None:
    ctx = doctor.DoctorContext(open_install(install))
    (fresh,) = doctor.check_secret_ages(ctx)
    assert fresh.verdict is doctor.Verdict.PASS

    long_ago = time.time() - 120 * 86400  # past the default 90-day policy
    os.utime(install / "secrets" / "redis_password", (long_ago, long_ago))
    (overdue,) = doctor.check_secret_ages(ctx)
    assert overdue.verdict is doctor.Verdict.WARN
    assert overdue.detail == "older than 90 days: redis_password (120 days)"
    assert "rotate-keys" in overdue.fix

    rotation = core.install_context(install, ctx.install.config)
    core.begin(rotation, [SecretKind.BACKUP_KEY])
    checks = {check.name: check for check in doctor.check_secret_ages(ctx)}
    assert checks["rotation"].verdict is doctor.Verdict.WARN
    assert "--resume" in checks["rotation"].fix
