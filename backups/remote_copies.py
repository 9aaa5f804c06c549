"""Copies of the backup bundles in backup.remote's bucket, so the bucket alone rebuilds the
install: pgBackRest's repository 2 holds the database's base backups and WAL beside them, and
these copies hold what pgBackRest does not (orbis.yaml, secrets/, tls/, Redis, the logical
dump), encrypted exactly as they are on disk.

Layout: `<backup.remote.path>/bundles/<backup id>/<file>`, a sibling of pgBackRest's `archive/`
and `backup/`. A bundle's `manifest.json` is uploaded after its components and deleted before
them, so a bundle whose manifest is in the bucket is complete; one without is an interrupted
copy, which the next push of that backup finishes and prune removes. A pull downloads into a
partial directory of the local repository, checks every file against the manifest's SHA-256
(no key needed) and renames it into place, as `backup create` does.

The client is boto3, which speaks SigV4 and multipart uploads to every store backup.remote
names (AWS S3, Backblaze B2, Wasabi, Cloudflare R2, MinIO, SeaweedFS); it is imported only
here, so commands that never touch the bucket do not pay its import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backups import manifest
from backups.catalog import list_backups
from backups.partials import (
    PARTIAL_PREFIX,
    lock_writer,
    partials_lock,
    publish,
    sweep_partials,
)
from backups.retention import Dated, Decision, decide
from orbisctl.core.config import RemoteConfig, RetentionConfig
from orbisctl.core.errors import USER_ERRNOS, DataError, StorageError, UserError, storage_error
from orbisctl.core.install import Install
from orbisctl.core.progress import NO_PROGRESS, Progress
from orbisctl.core.secretfiles import REMOTE_ACCESS_KEY, REMOTE_SECRET_KEY

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BUNDLES_DIR = "bundles"
# Parts of 64 MiB: a 1 GB dump is 16 parts, and a store's 10 000-part limit is 640 GB away.
_PART_SIZE = 64 * 1024 * 1024
_CONNECT_TIMEOUT_SECONDS = 5
_READ_TIMEOUT_SECONDS = 60
_READ_CHUNK = 1024 * 1024
INCOMPLETE = "incomplete copy (no manifest)"
# A bundle without a manifest untouched this long is an interrupted copy, not one being
# pushed now.
ABANDONED_AFTER = timedelta(days=1)

# What the store's error codes mean to the operator, and what to do.
_KEYS_HINT = (
    "check backup.remote's key pair: secrets/remote_access_key and secrets/remote_secret_key"
)
_CODE_HINTS = {
    "InvalidAccessKeyId": ("the object store does not know the access key", _KEYS_HINT),
    "SignatureDoesNotMatch": ("the object store refused the secret key", _KEYS_HINT),
    "AccessDenied": ("the object store denied access", _KEYS_HINT + " and the key's policy"),
    "NoSuchBucket": (
        "the bucket does not exist",
        "create the bucket (or fix backup.remote.bucket in orbis.yaml)",
    ),
    "InvalidBucketName": ("the bucket name is invalid", "fix backup.remote.bucket in orbis.yaml"),
}


@dataclass(frozen=True)
class Bucket:
    """Where the copies go and how to reach it: backup.remote plus its key pair."""

    remote: RemoteConfig
    access_key: str
    secret_key: str
    ca_file: Path | None  # absolute

    @property
    def prefix(self) -> str:
        """The bundles' key prefix inside the bucket, with its trailing slash."""
        return f"{self.remote.path.strip('/')}/{BUNDLES_DIR}/".lstrip("/")

    def describe(self) -> str:
        return f"s3://{self.remote.bucket}/{self.prefix} at {self.remote.endpoint}"


def install_bucket(install: Install) -> Bucket | None:
    """The install's backup.remote with the key pair from secrets/, or None without one."""
    remote = install.config.backup.remote
    if remote is None:
        return None
    access_key, secret_key = (
        _read_key(install, REMOTE_ACCESS_KEY),
        _read_key(install, REMOTE_SECRET_KEY),
    )
    ca_file = install.root / remote.ca_file if remote.ca_file else None
    return Bucket(remote, access_key, secret_key, ca_file)


def bundle_bucket(install: Install) -> Bucket | None:
    """The bucket `backup create` copies bundles to (and prune and doctor look at): None
    without backup.remote, or with backup.remote.copy_bundles false."""
    remote = install.config.backup.remote
    if remote is None or not remote.copy_bundles:
        return None
    return install_bucket(install)


def _read_key(install: Install, name: str) -> str:
    path = install.secret(name)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        value = ""
        reason = exc.strerror or type(exc).__name__
    else:
        reason = "empty"
    if not value:
        raise UserError(
            f"backup.remote is set but {path} is unreadable ({reason})",
            hint=f"write the object store's key there on one line "
            f"(`install -m 600 /dev/stdin {path}`), or remove backup.remote",
        )
    return value


@dataclass(frozen=True)
class _Object:
    size: int
    modified: datetime


@dataclass(frozen=True)
class RemoteBundle:
    """A bundle in the bucket; `manifest` None when its manifest cannot be read."""

    backup_id: str
    size: int  # bytes stored, every file of the bundle
    modified: datetime  # the newest of its objects' upload times
    manifest: manifest.Manifest | None
    problem: str = ""

    @property
    def created_at(self) -> datetime | None:
        return self.manifest.created_at if self.manifest else None


@dataclass(frozen=True)
class PushResult:
    backup_id: str
    uploaded_bytes: int  # 0 when the bucket held the bundle already
    seconds: float


@dataclass(frozen=True)
class RemotePrunePlan(Decision):
    incomplete: list[str]  # bundles without a manifest: interrupted copies


def store_error(exc: Exception, bucket: Bucket, *, doing: str) -> StorageError:
    """One line for what the store (or the way to it) refused, with the fix; no secret."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        SSLError,
    )

    where = f"{doing} ({bucket.describe()})"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in _CODE_HINTS:
            problem, hint = _CODE_HINTS[code]
            return StorageError(f"{where}: {problem} ({code})", hint=hint)
        return StorageError(
            f"{where}: the object store answered {code or 'an error'}: {error.get('Message', '')}",
            hint="see the store's documentation for that code; `orbisctl doctor` checks backup.remote",
        )
    if isinstance(exc, SSLError):
        return StorageError(
            f"{where}: the store's TLS certificate is not trusted",
            hint="set backup.remote.ca_file to the CA that signed it (tls/remote-ca.crt), "
            "or fix the endpoint name",
        )
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return StorageError(
            f"{where}: cannot reach the object store at "
            f"{bucket.remote.endpoint}:{bucket.remote.port}",
            hint="check that this host reaches it (DNS, firewall, the store running) and "
            "backup.remote.endpoint and port in orbis.yaml",
        )
    return StorageError(
        f"{where}: {type(exc).__name__}: {exc}",
        hint="check backup.remote in orbis.yaml and that the store is up",
    )


def _client(bucket: Bucket) -> S3Client:
    import boto3
    from botocore.config import Config

    remote = bucket.remote
    verify: bool | str = (
        (str(bucket.ca_file) if bucket.ca_file else True) if remote.verify_tls else False
    )
    if not remote.verify_tls:
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return boto3.client(
        "s3",
        endpoint_url=f"https://{remote.endpoint}:{remote.port}",
        region_name=remote.region,
        aws_access_key_id=bucket.access_key,
        aws_secret_access_key=bucket.secret_key,
        verify=verify,
        config=Config(
            s3={"addressing_style": "path" if remote.uri_style == "path" else "virtual"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=_CONNECT_TIMEOUT_SECONDS,
            read_timeout=_READ_TIMEOUT_SECONDS,
        ),
    )


class RemoteCopies:
    """The bundles in one bucket: push, list, pull and prune them."""

    def __init__(self, bucket: Bucket, client: S3Client | None = None) -> None:
        self.bucket = bucket
        self._s3 = client or _client(bucket)

    @contextlib.contextmanager
    def _reporting(self, doing: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise store_error(exc, self.bucket, doing=doing) from None

    def _key(self, backup_id: str, name: str = "") -> str:
        return f"{self.bucket.prefix}{backup_id}/{name}"

    def _objects(self, prefix: str) -> dict[str, _Object]:
        """Every object under `prefix` by key."""
        found: dict[str, _Object] = {}
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket.remote.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                found[item["Key"]] = _Object(item["Size"], item["LastModified"])
        return found

    def _sizes(self, prefix: str) -> dict[str, int]:
        return {key: found.size for key, found in self._objects(prefix).items()}

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=_PART_SIZE, multipart_chunksize=_PART_SIZE, max_concurrency=4
        )

    def push(self, backup: Path, *, progress: Progress = NO_PROGRESS) -> PushResult:
        """Copy one complete local backup into the bucket (again: what is there with the
        right size is kept), its manifest last."""
        loaded = manifest.load(backup / manifest.MANIFEST_FILE).manifest
        started = time.monotonic()
        with self._reporting(f"cannot copy backup {loaded.backup_id} to backup.remote"):
            present = self._sizes(self._key(loaded.backup_id))
            manifest_key = self._key(loaded.backup_id, manifest.MANIFEST_FILE)
            manifest_bytes = (backup / manifest.MANIFEST_FILE).read_bytes()
            missing = [
                c
                for c in loaded.components.values()
                if present.get(self._key(loaded.backup_id, c.file)) != c.size
            ]
            if not missing and present.get(manifest_key) == len(manifest_bytes):
                return PushResult(loaded.backup_id, 0, time.monotonic() - started)
            progress.step(
                f"copy backup {loaded.backup_id} to backup.remote",
                total_bytes=sum(c.size for c in missing),
            )
            for component in missing:
                self._s3.upload_file(
                    str(backup / component.file),
                    self.bucket.remote.bucket,
                    self._key(loaded.backup_id, component.file),
                    Config=self._transfer_config(),
                    Callback=progress.advance,
                )
            stored = self._sizes(self._key(loaded.backup_id))
            for component in loaded.components.values():
                size = stored.get(self._key(loaded.backup_id, component.file))
                if size != component.size:
                    raise DataError(
                        f"backup {loaded.backup_id}: the bucket holds {size} bytes of "
                        f"{component.file}, not {component.size}",
                        hint="run `orbisctl backup remote push` again; if it repeats, check the store",
                    )
            self._s3.put_object(
                Bucket=self.bucket.remote.bucket, Key=manifest_key, Body=manifest_bytes
            )
        return PushResult(
            loaded.backup_id, sum(c.size for c in missing), time.monotonic() - started
        )

    def bundles(self) -> list[RemoteBundle]:
        """The bundles in the bucket, oldest first (ids sort by time), complete or not."""
        with self._reporting("cannot list backup.remote's bundles"):
            grouped: dict[str, dict[str, _Object]] = {}
            for key, found in self._objects(self.bucket.prefix).items():
                backup_id, _, name = key.removeprefix(self.bucket.prefix).partition("/")
                if backup_id and name:
                    grouped.setdefault(backup_id, {})[name] = found
            bundles = []
            for backup_id, files in sorted(grouped.items()):
                size = sum(found.size for found in files.values())
                modified = max(found.modified for found in files.values())
                if manifest.MANIFEST_FILE not in files:
                    bundles.append(RemoteBundle(backup_id, size, modified, None, INCOMPLETE))
                    continue
                bundles.append(self._read_bundle(backup_id, size, modified))
        return bundles

    def _read_bundle(self, backup_id: str, size: int, modified: datetime) -> RemoteBundle:
        body = self._s3.get_object(
            Bucket=self.bucket.remote.bucket, Key=self._key(backup_id, manifest.MANIFEST_FILE)
        )["Body"].read()
        try:
            parsed = manifest.parse(body, backup_id).manifest
        except DataError as exc:
            return RemoteBundle(backup_id, size, modified, None, exc.message)
        return RemoteBundle(backup_id, size, modified, parsed)

    def complete(self) -> list[RemoteBundle]:
        return [bundle for bundle in self.bundles() if bundle.manifest is not None]

    def pull(self, backup_id: str, repository: Path, *, progress: Progress = NO_PROGRESS) -> Path:
        """Download a complete bundle into `repository/<id>/`, every file checked against
        its manifest; an existing local copy is left as it is."""
        final = repository / backup_id
        if (final / manifest.MANIFEST_FILE).exists():
            return final
        workdir = repository / f"{PARTIAL_PREFIX}{backup_id}"
        try:
            repository.mkdir(parents=True, exist_ok=True)
            with partials_lock(repository):
                sweep_partials([workdir] if workdir.exists() else [])
                workdir.mkdir(mode=0o700)
                writer = lock_writer(workdir)
        except OSError as exc:
            raise _local_error(exc, repository) from None
        try:
            with self._reporting(f"cannot fetch backup {backup_id} from backup.remote"):
                manifest_path = workdir / manifest.MANIFEST_FILE
                try:
                    self._s3.download_file(
                        self.bucket.remote.bucket,
                        self._key(backup_id, manifest.MANIFEST_FILE),
                        str(manifest_path),
                    )
                except Exception as exc:  # a 404 here is "no such backup", said plainly
                    if _is_missing(exc):
                        raise UserError(
                            f"backup.remote holds no complete backup {backup_id}",
                            hint="`orbisctl backup remote list` shows the ids",
                        ) from None
                    raise
                loaded = manifest.load(manifest_path).manifest
                progress.step(
                    f"fetch backup {backup_id} from backup.remote",
                    total_bytes=sum(c.size for c in loaded.components.values()),
                )
                for component in loaded.components.values():
                    target = workdir / component.file
                    self._s3.download_file(
                        self.bucket.remote.bucket,
                        self._key(backup_id, component.file),
                        str(target),
                        Config=self._transfer_config(),
                        Callback=progress.advance,
                    )
                    _check_download(backup_id, target, component)
            for path in workdir.iterdir():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            publish(workdir, final)
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise _local_error(exc, repository) from None
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            os.close(writer)
        return final

    def delete(self, backup_ids: Sequence[str]) -> None:
        """Remove bundles, each one's manifest first (so none is ever half there yet
        complete-looking)."""
        for backup_id in backup_ids:
            with self._reporting(f"cannot delete backup {backup_id} from backup.remote"):
                self._s3.delete_object(
                    Bucket=self.bucket.remote.bucket,
                    Key=self._key(backup_id, manifest.MANIFEST_FILE),
                )
                rest = [{"Key": key} for key in self._sizes(self._key(backup_id))]
                for start in range(0, len(rest), 1000):  # DeleteObjects takes 1000 keys
                    self._s3.delete_objects(
                        Bucket=self.bucket.remote.bucket,
                        Delete={"Objects": rest[start : start + 1000], "Quiet": True},  # type: ignore[typeddict-item]
                    )

    def plan_prune(
        self,
        policy: RetentionConfig,
        *,
        include_labelled: bool = False,
        now: datetime | None = None,
    ) -> RemotePrunePlan:
        """The same policy as the local repository's (backups.retention), applied to the
        bucket's own bundles: either side alone keeps what the policy promises."""
        now = now or datetime.now(UTC)
        bundles = self.bundles()
        decision = decide(
            [
                Dated(b.backup_id, b.manifest.created_at, b.manifest.label)
                for b in bundles
                if b.manifest is not None
            ],
            policy,
            include_labelled=include_labelled,
        )
        return RemotePrunePlan(
            **vars(decision),
            # An interrupted copy, once no push of it can still be running.
            incomplete=sorted(
                b.backup_id
                for b in bundles
                if b.problem == INCOMPLETE and now - b.modified > ABANDONED_AFTER
            ),
        )

    def prune(
        self, policy: RetentionConfig, *, include_labelled: bool = False, dry_run: bool = False
    ) -> RemotePrunePlan:
        """Delete what `plan_prune` lets go (nothing with `dry_run`); return the plan."""
        plan = self.plan_prune(policy, include_labelled=include_labelled)
        if not dry_run:
            self.delete([*plan.delete, *plan.incomplete])
        return plan


def _is_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code", "")) in (
        "404",
        "NoSuchKey",
    )


def _check_download(backup_id: str, path: Path, component: manifest.Component) -> None:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size != component.size or digest.hexdigest() != component.sha256:
        raise DataError(
            f"backup {backup_id}: {component.file} from backup.remote does not match its "
            f"manifest ({size} bytes, {component.size} expected, or a different checksum)",
            hint="the copy in the bucket is damaged: pull another backup "
            "(`orbisctl backup remote list`)",
        )


def _local_error(exc: OSError, repository: Path) -> OSError | StorageError:
    if exc.errno not in USER_ERRNOS:
        return exc
    return storage_error(
        exc,
        repository,
        doing="cannot write the fetched backup",
        elsewhere="set backup.location in orbis.yaml to a directory on another file system",
    )


def unpushed(repository: Path, complete: Sequence[RemoteBundle]) -> list[Path]:
    """Local complete backups missing from the bucket's `complete` bundles, oldest first."""
    in_bucket = {b.backup_id for b in complete}
    return [
        entry.path
        for entry in list_backups(repository)
        if entry.manifest is not None and entry.backup_id not in in_bucket
    ]


def push_pending(
    copies: RemoteCopies, repository: Path, *, progress: Progress = NO_PROGRESS
) -> list[PushResult]:
    """Copy every local backup the bucket lacks, oldest first: after an outage of the store,
    the next backup's push catches up on what the outage missed."""
    pending = unpushed(repository, copies.complete())
    return [copies.push(path, progress=progress) for path in pending]
