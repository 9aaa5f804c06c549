"""One error hierarchy for the CLI; `cli.py` is the one place that shows these errors.

Core code raises these; it never prints or exits. Each error carries the exit code the
process ends with and, where it helps, a hint saying what to do.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """Process exit codes (documented in docs/operations.md)."""

    OK = 0
    FAILURE = 1  # a check found a problem (`render --check` drift, a failed drill)
    USAGE = 2  # bad flags or arguments, or an invalid orbis.yaml
    CONFIG = 3  # the install directory is missing, foreign, or inconsistent
    UNHEALTHY = 4  # services did not become healthy in time
    ENGINE = 5  # Docker engine or Compose missing or failing
    DATA = 6  # a backup or restore refused: corrupt, tampered, wrong key, too new
    STORAGE = 7  # a file system refused a write: full, read-only, no permission
    INTERRUPTED = 130


class OrbisError(Exception):
    """Base of every error orbisctl reports to a user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(OrbisError):
    """Bad input from the operator: flags, arguments, files they pointed us to."""

    exit_code = ExitCode.USAGE


class ConfigError(UserError):
    """orbis.yaml is malformed or invalid; `problems` holds one line per key path.

    Each problem is shown as `<source>: <problem>`; `source` is what holds the bad values
    (orbis.yaml by default, read from the message), "" when each problem names its own
    (some came from command-line flags).
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        problems: list[str] | None = None,
        hint: str | None = None,
        *,
        source: str | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.problems = problems or []
        self.source = source


class InstallDirError(OrbisError):
    """The install directory is missing, unwritable, foreign or inconsistent."""

    exit_code = ExitCode.CONFIG


class EngineError(OrbisError):
    """The Docker engine or Compose is unavailable or failed."""

    exit_code = ExitCode.ENGINE


class UnhealthyError(OrbisError):
    """Services did not become healthy."""

    exit_code = ExitCode.UNHEALTHY


class DataError(OrbisError):
    """A backup, restore or key ring refused the data it was given."""

    exit_code = ExitCode.DATA


class CheckFailed(OrbisError):
    """A check ran and found a problem (drift, a failed drill)."""

    exit_code = ExitCode.FAILURE


class StorageError(OrbisError):
    """A file system refused what orbisctl had to write or remove there: full, read-only,
    no permission, not a directory. The message names the path, the hint the fix."""

    exit_code = ExitCode.STORAGE


# What an operator's file system does to a write, as opposed to a bug of ours.
USER_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EEXIST,
    }
)


def storage_error(
    exc: OSError, path: Path | str | None = None, *, doing: str = "", elsewhere: str = ""
) -> StorageError:
    """A StorageError for `exc` (errno in USER_ERRNOS): one line naming the path and what was
    being done, a hint with the fix. `path` is where the write went (a full disk fails
    `write()`, which names no file); without it, the file `exc` names. `elsewhere` says how
    to write somewhere else instead (e.g. "set backup.location in orbis.yaml …")."""
    if path is None and not exc.filename:  # a write() that failed, no path known here
        return StorageError(
            f"{doing or 'a write failed'}: {exc.strerror or type(exc).__name__}",
            hint="free disk space or fix the file system (`df -h` shows which is full)",
        )
    where = Path(path) if path is not None else Path(str(exc.filename))
    reason = exc.strerror or type(exc).__name__
    message = f"{doing} in {where}: {reason}" if doing else f"{where}: {reason}"
    also = f", or {elsewhere}" if elsewhere else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = f"free space on the file system of {where} (`df -h {where}`){also}"
    elif exc.errno == errno.EROFS:
        hint = f"{where} is on a read-only file system: remount it read-write{also}"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = f"let the user running orbisctl write to {where} (or run it as root){also}"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        hint = f"a file stands where a directory is needed in {where}: move it{also}"
    else:
        hint = f"check {where}{also}"
    return StorageError(message, hint=hint)
