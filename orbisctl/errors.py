"""One error hierarchy for the CLI; `cli.py` is the one place that shows these errors.

Core code raises these; it never prints or exits. Each error carries the exit code the
process ends with and, where it helps, a hint saying what to do.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (documented in docs/operations.md)."""

    OK = 0
    FAILURE = 1  # a check found a problem (`render --check` drift, a failed drill)
    USAGE = 2  # bad flags or arguments, or an invalid orbis.yaml
    CONFIG = 3  # the install directory is missing, foreign, or inconsistent
    UNHEALTHY = 4  # services did not become healthy in time
    ENGINE = 5  # Docker engine or Compose missing or failing
    DATA = 6  # a backup or restore refused: corrupt, tampered, wrong key, too new
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
