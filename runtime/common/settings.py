"""Helpers for reading runtime settings from the environment (docs/architecture.md).

Secrets never arrive as plain variables: a `*_FILE` variable names a file holding them.
Every helper takes the environment as a mapping so settings can be built without touching
`os.environ` (tests, and handlers never read it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import psycopg.conninfo


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""


def required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"{name} is not set; set it in the service's environment")
    return value


def optional(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def integer(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}")
    return value


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


def csv_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def secret_lines(env: Mapping[str, str], name: str, *, required_file: bool = True) -> list[str]:
    """Non-empty lines of the secret file named by the variable `name` (a `*_FILE`)."""
    path_text = env.get(name, "").strip()
    if not path_text:
        if required_file:
            raise SettingsError(f"{name} is not set; point it at the secret file")
        return []
    path = Path(path_text)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{name}: cannot read {path} ({exc.strerror})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if required_file and not lines:
        raise SettingsError(f"{name}: {path} is empty")
    return lines


def secret(env: Mapping[str, str], name: str, *, required_file: bool = True) -> str | None:
    """The first line of the secret file named by `name`, or None when optional and unset."""
    lines = secret_lines(env, name, required_file=required_file)
    return lines[0] if lines else None


def postgres_conninfo(url: str, password: str | None, *, user: str | None = None) -> str:
    """A libpq connection string from a password-less URL plus the password from its file;
    `user` (from ORBIS_DATABASE_USER_FILE) replaces the URL's user: key rotation alternates
    between login roles."""
    overrides = {name: value for name, value in (("password", password), ("user", user)) if value}
    try:
        return psycopg.conninfo.make_conninfo(url, **overrides)
    except psycopg.ProgrammingError as exc:
        raise SettingsError(f"database URL is malformed: {exc}") from None
