"""The secret files of an install (docs/architecture.md): names, and how each is generated."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from orbisctl.core.errors import InstallDirError, UserError
from runtime.common.keyring import new_keyring

# File names, not values.
POSTGRES_PASSWORD = "postgres_password"  # noqa: S105
# The login role the services use; `rotate-keys --db-password` alternates it (orbis_a/orbis_b).
POSTGRES_USER = "postgres_user"
REDIS_PASSWORD = "redis_password"  # noqa: S105
JWT_KEYS = "jwt_keys.json"
INTERNAL_TOKEN = "internal_token"  # noqa: S105
BACKUP_KEY = "backup_key"
GEMINI_API_KEY = "gemini_api_key"
# The pgBackRest repositories' cipher passphrase (continuous archiving).
ARCHIVE_KEY = "archive_key"
# pgBackRest's secret configuration half, made from ARCHIVE_KEY (and the object store's keys)
# by `init` and `up`; mounted into postgres.
PGBACKREST_SECRET_CONFIG = "pgbackrest.conf"  # noqa: S105
# The object store's key pair for backup.remote: the operator writes them, one line each.
REMOTE_ACCESS_KEY = "remote_access_key"
REMOTE_SECRET_KEY = "remote_secret_key"  # noqa: S105

SECRET_NAMES = (
    POSTGRES_USER,
    POSTGRES_PASSWORD,
    REDIS_PASSWORD,
    JWT_KEYS,
    INTERNAL_TOKEN,
    BACKUP_KEY,
    GEMINI_API_KEY,
    ARCHIVE_KEY,
)

# Mounted into containers (Compose `secrets:`), so owned by the containers' uid. The others
# are read only by orbisctl on the host.
MOUNTED_SECRETS = frozenset(
    {
        POSTGRES_USER,
        POSTGRES_PASSWORD,
        REDIS_PASSWORD,
        JWT_KEYS,
        INTERNAL_TOKEN,
        GEMINI_API_KEY,
        PGBACKREST_SECRET_CONFIG,
    }
)

_TOKEN_BYTES = 32
# The database owner role, the first login role of a fresh install.
POSTGRES_OWNER_ROLE = "orbis"
# Marks the Gemini key `init` generated for the emulator: only the emulator accepts it.
EMULATOR_KEY_PREFIX = "emulator-"


def current_value(path: Path) -> str:
    """The value in use of a secret file: its first line (during a rotation the file can hold
    the new and the old value, one a line, the one in use first)."""
    try:
        return path.read_text().splitlines()[0]
    except (OSError, IndexError):
        raise InstallDirError(
            f"{path} is missing or empty",
            hint="restore it (`orbisctl restore ID --secrets-only`) or run `orbisctl init`",
        ) from None


def generate_secret(name: str) -> str:
    """A fresh value for the secret file `name` (with its trailing newline).

    `gemini_api_key` generated here is a key only the emulator accepts; a real Gemini key
    comes from the operator (`read_gemini_key`).
    """
    if name == POSTGRES_USER:
        return f"{POSTGRES_OWNER_ROLE}\n"
    if name == JWT_KEYS:
        return new_keyring().dumps()
    if name == BACKUP_KEY:
        key = secrets.token_bytes(_TOKEN_BYTES)
        return base64.urlsafe_b64encode(key).decode().rstrip("=") + "\n"
    if name == GEMINI_API_KEY:
        return f"{EMULATOR_KEY_PREFIX}{secrets.token_urlsafe(_TOKEN_BYTES)}\n"
    if name in SECRET_NAMES:
        # URL-safe: no character that needs quoting in a URL, a shell or a Redis ACL rule.
        return secrets.token_urlsafe(_TOKEN_BYTES) + "\n"
    raise ValueError(f"unknown secret {name!r}")


def read_gemini_key(path: Path) -> str:
    """The operator's Gemini API key from a file (never from a flag: flags show up in `ps`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(
            f"cannot read the Gemini API key file {path}: {reason}",
            hint="pass --gemini-key-file with a readable file holding only the key",
        ) from None
    key = text.strip()
    if not key or any(char.isspace() for char in key):
        raise UserError(
            f"the Gemini API key file {path} must hold exactly one key on one line",
            hint="write only the key into the file",
        )
    return key + "\n"


def is_emulator_key(path: Path) -> bool:
    """True when the Gemini key file holds the key `init` generated for the emulator."""
    return path.read_text(encoding="utf-8").startswith(EMULATOR_KEY_PREFIX)
