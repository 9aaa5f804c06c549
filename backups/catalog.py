"""The backups in a repository: listed oldest first, and one found by id, id prefix or path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backups import manifest
from backups.manifest import Manifest
from orbisctl.core.errors import DataError, UserError
from orbisctl.core.install import Install


@dataclass(frozen=True)
class BackupEntry:
    path: Path
    manifest: Manifest | None  # None: the manifest is unreadable or too new
    problem: str = ""

    @property
    def backup_id(self) -> str:
        return self.manifest.backup_id if self.manifest else self.path.name

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


def list_backups(repository: Path) -> list[BackupEntry]:
    """Complete backups in the repository, oldest first (ids sort by time)."""
    if not repository.is_dir():
        return []
    entries = []
    for path in sorted(repository.iterdir()):
        if not path.is_dir() or path.name.startswith(".") or path.name == "drills":
            continue
        try:
            entries.append(BackupEntry(path, manifest.load(path / manifest.MANIFEST_FILE).manifest))
        except DataError as exc:
            entries.append(BackupEntry(path, None, exc.message))
    return entries


def resolve(install: Install, ref: str) -> Path:
    """A backup directory from an id in the repository or a path to a backup directory."""
    candidate = Path(ref)
    if (candidate / manifest.MANIFEST_FILE).exists():
        return candidate
    if "/" in ref:  # a path (ids never hold a slash): say what is wrong with it
        usage = "pass a backup directory (it holds manifest.json) or an id from `backup list`"
        if not candidate.exists():
            raise UserError(f"{candidate} does not exist", hint=usage)
        raise UserError(
            f"{candidate} is not a backup: it has no {manifest.MANIFEST_FILE}", hint=usage
        )
    in_repo = install.repository / ref
    if in_repo.is_dir() and not ref.startswith("."):
        return in_repo
    matches = [e.path for e in list_backups(install.repository) if e.path.name.startswith(ref)]
    if len(matches) == 1 and ref:
        return matches[0]
    raise UserError(
        f"no backup {ref!r} in {install.repository}"
        + (f" ({len(matches)} match that prefix)" if len(matches) > 1 else ""),
        hint="`orbisctl backup list` shows the ids; a path to a backup directory works too",
    )


def latest_backup(install: Install) -> Path:
    complete = [e for e in list_backups(install.repository) if e.manifest is not None]
    if not complete:
        raise UserError(
            f"there is no backup in {install.repository}", hint="take one with `orbisctl backup`"
        )
    return complete[-1].path
