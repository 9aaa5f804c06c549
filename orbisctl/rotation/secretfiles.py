"""The install's secret files as rotation sees them: atomic 0600 writes, staging, fingerprints.

During a rotation a secret can have two staged companions in `secrets/`:

- `<name>.next`: the new value, written before anything uses it, so a killed rotation
  resumes with the same new value instead of minting another one;
- `<name>.prev`: the value before the rotation, so `--abort` can put it back.

Both are removed when the rotation finishes. Values are never logged or printed; what leaves
this module for journals and output is a fingerprint (a truncated SHA-256 of a high-entropy
value, which identifies the version without revealing it).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

from orbisctl.core.errors import InstallDirError
from orbisctl.core.fsutil import atomic_write

SECRETS_DIRNAME = "secrets"
SECRET_MODE = 0o600
_NEXT = ".next"
_PREV = ".prev"


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SecretStore:
    """The `secrets/` directory of one install."""

    directory: Path

    @classmethod
    def of_install(cls, install_dir: Path) -> SecretStore:
        return cls(install_dir / SECRETS_DIRNAME)

    def path(self, name: str) -> Path:
        return self.directory / name

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def read(self, name: str) -> str:
        path = self.path(name)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InstallDirError(
                f"secret file {path} is missing",
                hint="run `orbisctl init` in the install directory to create missing secrets",
            ) from None

    def read_lines(self, name: str) -> list[str]:
        return [line.strip() for line in self.read(name).splitlines() if line.strip()]

    def read_first_line(self, name: str) -> str:
        lines = self.read_lines(name)
        if not lines:
            raise InstallDirError(f"secret file {self.path(name)} is empty")
        return lines[0]

    def write(self, name: str, text: str, *, owner_like: str | None = None) -> None:
        """Replace a secret atomically, 0600, keeping the file's owner.

        Secrets mounted into containers belong to the containers' uid (`orbisctl init`); a
        replaced file keeps that owner, and a new one takes the owner of `owner_like`.
        """
        path = self.path(name)
        reference = path if path.exists() else self.path(owner_like) if owner_like else None
        owner = None
        if reference is not None and reference.exists():
            info = reference.stat()
            owner = (info.st_uid, info.st_gid)
        atomic_write(path, text.encode(), mode=SECRET_MODE, owner=owner)

    def write_lines(self, name: str, *lines: str, owner_like: str | None = None) -> None:
        self.write(name, "".join(f"{line}\n" for line in lines), owner_like=owner_like)

    # staging -------------------------------------------------------------------------------

    def staged_next(self, name: str) -> str | None:
        path = self.path(name + _NEXT)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def staged_prev(self, name: str) -> str | None:
        path = self.path(name + _PREV)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    # Staged values are read only by orbisctl on the host: they keep the default owner.
    def stage_next(self, name: str, text: str) -> None:
        atomic_write(self.path(name + _NEXT), text.encode(), mode=SECRET_MODE)

    def stage_prev(self, name: str, text: str) -> None:
        atomic_write(self.path(name + _PREV), text.encode(), mode=SECRET_MODE)

    def clear_staged(self, name: str) -> None:
        for suffix in (_NEXT, _PREV):
            with contextlib.suppress(FileNotFoundError):
                self.path(name + suffix).unlink()
