"""File-system helpers for the backup repository: orbisctl's atomic writes, with parents made."""

from __future__ import annotations

from pathlib import Path

from orbisctl.core import fsutil


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """`fsutil.atomic_write`, creating the parent directory first (drill reports, key files and
    schedule files may be the first thing written in their directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write(path, data, mode=mode)
