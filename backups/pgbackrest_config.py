"""pgBackRest's configuration file, rendered from plain values (pure: no process, no file).

Two halves: `render_config` (no secret; rendered into the install's `pgbackrest/` and
reviewable) and `render_secret_config` (each repository's cipher passphrase and object store
keys), which only ever goes to `secrets/` or a tmpfs and is found through
`config-include-path`. `backups/archive.py` runs pgBackRest with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orbisctl.core.errors import DataError

STANZA = "orbis"
CIPHER_TYPE = "aes-256-cbc"


@dataclass(frozen=True)
class ObjectStore:
    """An S3-compatible bucket (AWS S3, Backblaze B2, Wasabi, Cloudflare R2, MinIO, SeaweedFS)."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    port: int = 443
    # `path` for stores without per-bucket host names (MinIO, SeaweedFS, most self-hosted).
    uri_style: str = "host"
    ca_file: Path | None = None
    verify_tls: bool = True


@dataclass(frozen=True)
class Repository:
    """One pgBackRest repository: `path` is a directory, or the prefix inside the bucket."""

    path: str
    store: ObjectStore | None = None
    # Full backups older than this are expired, keeping what covers the window.
    window_days: int = 7


@dataclass(frozen=True)
class RepositoryKeys:
    """A repository's secrets: the cipher passphrase and, for an object store, its key pair."""

    cipher_pass: str
    access_key: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class ClusterLocation:
    """Where pgBackRest finds the PostgreSQL cluster it archives (on the same machine)."""

    data_dir: str
    socket_dir: str
    port: int = 5432
    user: str = "postgres"


@dataclass(frozen=True)
class Workspace:
    """pgBackRest's own directories: the async archive's spool (keep it across restarts), locks,
    and logs (`None` logs to stderr only)."""

    spool_dir: str
    lock_dir: str
    log_dir: str | None = None


def render_config(
    cluster: ClusterLocation, repositories: Sequence[Repository], workspace: Workspace
) -> str:
    """pgbackrest.conf without a secret in it (they are in `render_secret_config`)."""
    if not repositories:
        raise ValueError("pgBackRest needs at least one repository")
    lines = [
        "[global]",
        f"spool-path={workspace.spool_dir}",
        f"lock-path={workspace.lock_dir}",
        # The server waits for archive-push; async pushes in parallel and answers from the spool.
        "archive-async=y",
        # How long the server's archive_command waits on the async push: a store that went
        # away shows as a failure in pg_stat_archiver after this, and is retried.
        "archive-timeout=30",
        "process-max=2",
        "compress-type=zst",
        "start-fast=y",
        "delta=y",
        "log-level-console=info",
        "log-level-stderr=warn",
    ]
    if workspace.log_dir is None:
        lines.append("log-level-file=off")
    else:
        lines.append(f"log-path={workspace.log_dir}")
    for index, repo in enumerate(repositories, start=1):
        prefix = f"repo{index}"
        lines += [
            f"{prefix}-path={repo.path}",
            f"{prefix}-cipher-type={CIPHER_TYPE}",
            f"{prefix}-retention-full-type=time",
            f"{prefix}-retention-full={repo.window_days}",
        ]
        if repo.store is not None:
            store = repo.store
            lines += [
                f"{prefix}-type=s3",
                f"{prefix}-s3-endpoint={store.endpoint}",
                f"{prefix}-s3-bucket={store.bucket}",
                f"{prefix}-s3-region={store.region}",
                f"{prefix}-s3-uri-style={store.uri_style}",
                f"{prefix}-storage-port={store.port}",
                f"{prefix}-storage-verify-tls={'y' if store.verify_tls else 'n'}",
            ]
            if store.ca_file is not None:
                lines.append(f"{prefix}-storage-ca-file={store.ca_file}")
    lines += [
        "",
        f"[{STANZA}]",
        f"pg1-path={cluster.data_dir}",
        f"pg1-socket-path={cluster.socket_dir}",
        f"pg1-port={cluster.port}",
        f"pg1-user={cluster.user}",
        "",
    ]
    return "\n".join(lines)


def render_secret_config(keys: Sequence[RepositoryKeys]) -> str:
    """The secret half: goes to a file of mode 0600 in `secrets/` or a tmpfs, never elsewhere."""
    lines = ["[global]"]
    for index, repo_keys in enumerate(keys, start=1):
        for value in (repo_keys.cipher_pass, repo_keys.access_key, repo_keys.secret_key):
            # A value is one line: a newline would start another option.
            if value is not None and ("\n" in value or not value.strip()):
                raise DataError(
                    f"a key of pgBackRest repository {index} is empty or spans lines",
                    hint="write each key on one line in its secrets/ file",
                )
        lines.append(f"repo{index}-cipher-pass={repo_keys.cipher_pass}")
        if repo_keys.access_key is not None:
            lines.append(f"repo{index}-s3-key={repo_keys.access_key}")
        if repo_keys.secret_key is not None:
            lines.append(f"repo{index}-s3-key-secret={repo_keys.secret_key}")
    return "\n".join(lines) + "\n"


def pgbackrest_argv(
    config_file: str | None, include_dir: str | None, args: Sequence[str]
) -> list[str]:
    """`pgbackrest` for the stanza with `args`; a None file keeps pgBackRest's default
    (/etc/pgbackrest/pgbackrest.conf and /etc/pgbackrest/conf.d)."""
    argv = ["pgbackrest"]
    if config_file:
        argv.append(f"--config={config_file}")
    if include_dir:
        argv.append(f"--config-include-path={include_dir}")
    return [*argv, f"--stanza={STANZA}", *args]


def archive_command(config_file: str | None = None, include_dir: str | None = None) -> str:
    """PostgreSQL's archive_command for the stanza (`%p` is the segment's path)."""
    return " ".join(pgbackrest_argv(config_file, include_dir, ["archive-push", "%p"]))
