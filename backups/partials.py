"""Backups under construction: `<repository>/.partial-<id>/`, renamed into place when complete.

The writer of a partial holds a lock on its `writer.pid` while it writes, so a partial whose
lock is free is the leftover of a killed backup: the next backup (and `prune`) removes it.
Partials are created and swept under a lock on the repository directory (`partials_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from orbisctl.core.fsutil import fsync_dir

PARTIAL_PREFIX = ".partial-"
WRITER_PID_FILE = "writer.pid"


@contextlib.contextmanager
def partials_lock(repository: Path) -> Iterator[None]:
    """Held (a lock on the repository directory itself: no file to leave behind) while a
    partial directory is created or swept, so a sweep never sees a new partial before its
    writer has locked it."""
    fd = os.open(repository, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # A file system without flock on directories (some network mounts) only loses the
        # guard for the instant between a new partial's mkdir and its writer.pid.
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_writer(workdir: Path) -> int:
    """Create the partial's `writer.pid` holding our pid and locked until the backup ends
    (the OS drops the lock when the process dies, however it dies)."""
    fd = os.open(workdir / WRITER_PID_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, str(os.getpid()).encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def publish(workdir: Path, final: Path) -> None:
    """Rename a finished partial (its files already fsynced) into place, durably. Its
    `writer.pid` goes only after the rename: `prune` takes a partial without a live writer
    for abandoned."""
    fsync_dir(workdir)
    workdir.rename(final)
    fsync_dir(final.parent)
    (final / WRITER_PID_FILE).unlink()


def _writer_alive(partial: Path) -> bool:
    """Whether a backup is still writing `partial`: its `writer.pid` is locked."""
    try:
        fd = os.open(partial / WRITER_PID_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False  # killed before it wrote one: writers create it under partials_lock
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def stale_partials(repository: Path) -> list[Path]:
    """Partial directories of interrupted backups: no live writer holds their lock."""
    if not repository.is_dir():
        return []
    return [
        path
        for path in sorted(repository.glob(f"{PARTIAL_PREFIX}*"))
        if path.is_dir() and not _writer_alive(path)
    ]


def sweep_partials(candidates: Collection[Path]) -> list[Path]:
    removed = []
    for path in candidates:
        if not _writer_alive(path):  # re-checked: the caller's list may be old
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_stale_partials(repository: Path, candidates: Collection[Path]) -> list[Path]:
    """Remove those of `candidates` that are still stale partials; return them."""
    if not candidates:
        return []
    with partials_lock(repository):
        return sweep_partials(candidates)
