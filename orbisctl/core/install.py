"""The install directory's layout (docs/architecture.md), the checks made before writing, and
the model of an install: its directory and its config."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from orbisctl.core import engine
from orbisctl.core.config import CONFIG_FILENAME, OrbisConfig, load_config
from orbisctl.core.errors import InstallDirError

SECRETS_DIR = "secrets"
TLS_DIR = "tls"
BACKUPS_DIR = "backups"
COMPOSE_FILENAME = "compose.yaml"

SECRETS_DIR_MODE = 0o700
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class InstallDir:
    """The paths of one install directory: what `init` plans and writes before a config
    exists. `Install` is the same directory with its config loaded."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILENAME

    @property
    def compose_file(self) -> Path:
        return self.root / COMPOSE_FILENAME

    @property
    def secrets_dir(self) -> Path:
        return self.root / SECRETS_DIR

    @property
    def tls_dir(self) -> Path:
        return self.root / TLS_DIR

    @property
    def backups_dir(self) -> Path:
        """The default backup repository, which `init` creates (`Install.repository` is the
        configured one)."""
        return self.root / BACKUPS_DIR

    def secret(self, name: str) -> Path:
        return self.secrets_dir / name

    def is_install(self) -> bool:
        return self.config_file.is_file()


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_writable(path: Path) -> None:
    """Prove we can create files where the install goes (access() lies for root)."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise InstallDirError(
            f"cannot create the install directory {path}: {existing} is not a directory",
            hint="pass --dir pointing at a directory",
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".orbisctl-probe-"):
            pass
    except OSError as exc:
        where = "" if existing == path else f" (its parent {existing})"
        raise InstallDirError(
            f"cannot write to {path}{where}: {exc.strerror}",
            hint="run as a user who can write there (usually root), or pass another --dir",
        ) from None


def check_init_target(root: Path) -> InstallDir:
    """The directory `init` may write: missing, empty, or an existing OrbisVoice install."""
    install = InstallDir(root)
    if root.exists() and not root.is_dir():
        raise InstallDirError(f"{root} exists and is not a directory", hint="pass another --dir")
    if root.is_dir() and not install.is_install() and next(root.iterdir(), None) is not None:
        raise InstallDirError(
            f"{root} is not empty and holds no {CONFIG_FILENAME}: it is not an OrbisVoice "
            "install, so init will not write into it",
            hint="pass --dir pointing at an empty or new directory",
        )
    _check_writable(root)
    return install


def require_install(root: Path) -> InstallDir:
    """The install directory of an existing install (for every verb but init)."""
    install = InstallDir(root)
    if not install.is_install():
        raise InstallDirError(
            f"{root} is not an OrbisVoice install (no {CONFIG_FILENAME})",
            hint="run `orbisctl init` first, or pass --dir pointing at the install directory",
        )
    return install


@dataclass(frozen=True)
class Install(InstallDir):
    """An install directory written by `orbisctl init`, and its config (the one model of an
    install that the stack, backups, the drill, rotation, doctor and images share)."""

    config: OrbisConfig

    @property
    def repository(self) -> Path:
        """The backup repository: `backup.location`, under the install unless absolute."""
        location = self.config.backup.location
        return location if location.is_absolute() else self.root / location

    def containers(self, client: docker.DockerClient) -> list[Any]:
        """This install's containers: of its project name *and* made in its directory."""
        return engine.project_containers(client, self.config.project_name, working_dir=self.root)

    def compose(self) -> engine.Compose:
        if not self.compose_file.is_file():
            raise InstallDirError(
                f"{self.compose_file} does not exist",
                hint="run `orbisctl render` (or `orbisctl init`) in the install directory",
            )
        return engine.Compose(
            self.compose_file, self.config.project_name, tuple(self.config.profiles)
        )


def open_install(root: Path) -> Install:
    root = root.resolve()
    return Install(root, load_config(root / CONFIG_FILENAME))
