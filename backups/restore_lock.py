"""The restore lock (`<repository>/.restore-lock`): one restore at a time, and the backup it
reads is safe from `prune`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from orbisctl.core.errors import USER_ERRNOS, UserError, storage_error

RESTORE_LOCK = ".restore-lock"


@contextlib.contextmanager
def restore_lock(repository: Path, backup_id: str) -> Iterator[None]:
    """One restore at a time; `prune` never deletes the backup named in the lock."""
    lock = repository / RESTORE_LOCK
    holder = locked_backup(repository)
    if holder is not None:
        raise UserError(
            f"another restore (of {holder}) is running", hint="wait for it to finish, then retry"
        )
    payload = json.dumps({"backup_id": backup_id, "pid": os.getpid()}).encode()
    try:
        repository.mkdir(parents=True, exist_ok=True)
        lock.unlink(missing_ok=True)  # a stale lock: its process is gone
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError("another restore started just now", hint="wait, then retry") from None
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        raise storage_error(exc, repository, doing="cannot write the restore lock") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
    except OSError as exc:
        lock.unlink(missing_ok=True)  # no empty or cut lock left behind
        if exc.errno not in USER_ERRNOS:
            raise
        raise storage_error(exc, repository, doing="cannot write the restore lock") from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locked_backup(repository: Path) -> str | None:
    """The backup id a live restore is using, if any."""
    try:
        data = json.loads((repository / RESTORE_LOCK).read_text())
        backup_id, pid = str(data["backup_id"]), int(data["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return backup_id if pid_alive(pid) else None
