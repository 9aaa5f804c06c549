"""`orbisctl.stack.ensure_database_login` outside Docker: what it refuses to do, and why.

Its work (the role made in a running cluster) is tested end to end in tests/e2e/test_backup.py
(a new host after a rotation; restore --with-secrets; the drill after a rotation).
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from orbisctl import stack
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import InstallDirError
from orbisctl.core.install import Install
from tests.backups.conftest import make_install

# A client that is never reached: these cases must stop before talking to an engine.
UNREACHABLE = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")


def _install(tmp_path: Path) -> Install:
    root = make_install(tmp_path / "install").root
    (root / "secrets" / "postgres_user").write_text("orbis_b\n")
    return Install(root, OrbisConfig())


def test_a_rotation_in_progress_keeps_its_hands_on_the_login_roles(tmp_path: Path) -> None:
    install = _install(tmp_path)
    journal = install.root / "rotation" / "journal.json"
    journal.parent.mkdir()
    journal.write_text("{}")
    assert stack.ensure_database_login(install, UNREACHABLE) is None


def test_a_missing_password_file_is_one_clear_error(tmp_path: Path) -> None:
    install = _install(tmp_path)
    (install.secrets_dir / "postgres_password").unlink()
    with pytest.raises(InstallDirError, match="postgres_password is missing or empty"):
        stack.ensure_database_login(install, UNREACHABLE)
