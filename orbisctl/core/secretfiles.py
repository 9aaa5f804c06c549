"""The secret files of an install (docs/architecture.md): names, how each is generated, and
the registry of those the containers read (`SECRET_MOUNTS`), from which the compose and stack
files take their secrets and the `*_FILE` paths they give the services."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from enum import StrEnum
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

# The upgrade gate's probe tenant (its login and agent, JSON), made by the first gate that
# needs it: host-only, never mounted.
GATE_PROBE = "gate_probe.json"

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


CONTAINER_SECRETS_DIR = "/run/secrets"


class MountedWhen(StrEnum):
    ALWAYS = "always"
    ARCHIVING = "archiving"  # backup.archive on (render.archiving_enabled)
    EMULATOR = "emulator"  # model.provider: emulator


@dataclass(frozen=True)
class SecretMount:
    """An install file the containers read as a Compose (or Swarm) secret."""

    # The secret's key in compose.yaml / stack.yaml.
    key: str
    # The install file, relative to the install directory.
    path: str
    # Where the container sees it: under /run/secrets (the key when empty), or absolute.
    target: str = ""
    when: MountedWhen = MountedWhen.ALWAYS

    @property
    def container_path(self) -> str:
        target = self.target or self.key
        return target if target.startswith("/") else f"{CONTAINER_SECRETS_DIR}/{target}"


SECRET_MOUNTS = (
    SecretMount("postgres_user", f"secrets/{POSTGRES_USER}"),
    SecretMount("postgres_password", f"secrets/{POSTGRES_PASSWORD}"),
    SecretMount("redis_password", f"secrets/{REDIS_PASSWORD}"),
    SecretMount("jwt_keys", f"secrets/{JWT_KEYS}", target=JWT_KEYS),
    SecretMount("internal_token", f"secrets/{INTERNAL_TOKEN}"),
    SecretMount("gemini_api_key", f"secrets/{GEMINI_API_KEY}"),
    SecretMount("server_tls_key", "tls/server.key", target="/etc/nginx/tls/server.key"),
    # In the directory PGBACKREST_CONFIG_INCLUDE_PATH names (orbisctl/render.py).
    SecretMount(
        "pgbackrest_secret",
        f"secrets/{PGBACKREST_SECRET_CONFIG}",
        target=f"{CONTAINER_SECRETS_DIR}/pgbackrest/secret.conf",
        when=MountedWhen.ARCHIVING,
    ),
    SecretMount("emulator_tls_key", "tls/emulator.key", when=MountedWhen.EMULATOR),
)


# The files under secrets/ that containers read, so owned by the containers' uid. The others
# are read only by orbisctl on the host.
MOUNTED_SECRETS = frozenset(
    Path(mount.path).name for mount in SECRET_MOUNTS if Path(mount.path).parent.name == "secrets"
)


def secret_mount(key: str) -> SecretMount:
    return next(mount for mount in SECRET_MOUNTS if mount.key == key)


def secret_mounts(*, archiving: bool, emulator: bool) -> dict[str, SecretMount]:
    """The secrets a stack with these parts mounts, by key, in the registry's order."""
    mounted = {
        MountedWhen.ALWAYS: True,
        MountedWhen.ARCHIVING: archiving,
        MountedWhen.EMULATOR: emulator,
    }
    return {mount.key: mount for mount in SECRET_MOUNTS if mounted[mount.when]}


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
