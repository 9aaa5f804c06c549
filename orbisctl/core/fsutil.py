"""Atomic file writes, append-only logs, per-install locks, and the one place rendered trees
reach the disk."""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Write `data` so readers see the old file or the whole new one, never a part.

    The temporary file gets its mode (and owner) before any byte is written, so a secret is
    never readable by others, not even for a moment.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Replace the content of `path` keeping its inode, for a file a running container has
    bind-mounted on its own: the mount holds the inode, so a rename (atomic_write) would never
    reach the container. A complete copy is written atomically beside it first
    (`NAME.new`, removed at the end) so a crash half-way leaves the whole new content on disk
    for `recover_in_place` to finish with."""
    staged = path.with_name(f"{path.name}.new")
    atomic_write(staged, data, mode=stat.S_IMODE(path.stat().st_mode))
    with path.open("r+b") as handle:
        handle.write(data)
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())
    staged.unlink()
    fsync_dir(path.parent)


def recover_in_place(path: Path) -> bool:
    """Finish a `rewrite_in_place` of `path` that a crash interrupted; True if there was one."""
    staged = path.with_name(f"{path.name}.new")
    if not staged.is_file():
        return False
    rewrite_in_place(path, staged.read_bytes())
    return True


def append_json_line(path: Path, record: dict[str, object]) -> None:
    """Append one JSON record to an audit log (mode 0600), durably. A line a crash cut short
    is ended first, so the new record is not glued to it and lost with it."""
    line = json.dumps(record, sort_keys=True) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_lines(path: Path) -> list[dict[str, object]]:
    """The records of an audit log; a line cut short by a crash mid-append is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: Exception) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created 0600) or raise `busy` at once; the OS
    releases it when the process dies, so a killed holder never leaves it taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable (the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Change(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class FileChange:
    path: Path
    change: Change


def _current(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_tree(
    files: dict[Path, str],
    root: Path,
    *,
    dry_run: bool = False,
    in_place: Collection[Path] = (),
) -> list[FileChange]:
    """Write rendered files under `root` (atomically, one by one); say what changed.

    With `dry_run` nothing is written; the result says what would change. Existing files in
    `in_place` (bind-mounted on their own into a container) keep their inode: see
    `rewrite_in_place`.
    """
    changes = []
    for relative, text in sorted(files.items()):
        target = root / relative
        current = _current(target)
        if current == text:
            changes.append(FileChange(relative, Change.UNCHANGED))
            continue
        if not dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative in in_place and current is not None:
                rewrite_in_place(target, text.encode("utf-8"))
            else:
                atomic_write(target, text.encode("utf-8"))
        changes.append(FileChange(relative, Change.CREATED if current is None else Change.UPDATED))
    return changes


def diff_tree(files: dict[Path, str], root: Path) -> str:
    """A unified diff from the files on disk to the rendered ones; empty when they match."""
    chunks: list[str] = []
    for relative, text in sorted(files.items()):
        current = _current(root / relative)
        if current == text:
            continue
        chunks.extend(
            difflib.unified_diff(
                (current or "").splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{relative} (on disk)" if current is not None else "/dev/null",
                tofile=f"{relative} (rendered)",
            )
        )
    return "".join(chunks)
