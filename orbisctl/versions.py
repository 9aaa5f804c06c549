"""What versions an install runs: this orbisctl, each service's image, the database.

`orbisctl version` prints these, and an upgrade needs them before it starts: the version
stamped on each image (its OCI version label, set by `images build`), the image's id and
registry digest, the schema version the database holds beside the one this code ships, and
PostgreSQL's major version. Functions here return data; the command prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import docker.errors
import requests

from backups.executor import ComposeExecutor
from backups.process import psql_session
from backups.schema import code_schema_version, database_schema_version
from orbisctl import __version__
from orbisctl.core import engine
from orbisctl.core.errors import EngineError
from orbisctl.core.install import Install
from orbisctl.images.steps import VERSION_LABEL
from orbisctl.render import image_refs

POSTGRES_SERVICE = "postgres"
# Images this project builds carry our version; upstream ones (redis in registry mode) don't.
OWN_IMAGE_PREFIX = "orbisvoice/"


@dataclass(frozen=True)
class ImageVersion:
    """One image a service runs (or, with the stack down, would run)."""

    service: str  # the compose service; with the stack down, the image's role (runtime, ...)
    ref: str
    image_id: str | None  # None: not on this engine
    digest: str | None  # the registry digest, for a pulled image
    version: str | None  # the image's version label; None for an upstream image
    containers: int  # running containers of the service on this image

    @property
    def ours(self) -> bool:
        return self.ref.startswith(OWN_IMAGE_PREFIX)


@dataclass(frozen=True)
class DatabaseVersion:
    schema: int | None  # the newest applied migration; None for a database never migrated
    postgres: str  # the server's version (`15.10`)
    postgres_major: int


@dataclass(frozen=True)
class Versions:
    cli: str
    code_schema: int  # the newest migration this code ships
    images: list[ImageVersion] = field(default_factory=list)
    database: DatabaseVersion | None = None
    # What could not be read (no install here, the engine or the database unreachable), and
    # what does not match: each line says what to do.
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for image, row in zip(self.images, data["images"], strict=True):
            row["ours"] = image.ours
        return data


@dataclass(frozen=True)
class ImageRecord:
    """What the engine says about one image: its id, repository digests and labels."""

    image_id: str
    digests: tuple[str, ...]
    labels: Mapping[str, str]


def image_record(image: Any) -> ImageRecord:
    attrs = image.attrs
    return ImageRecord(
        image_id=str(image.id),
        digests=tuple(attrs.get("RepoDigests") or ()),
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
    )


def running_images(
    containers: Iterable[tuple[str, str, ImageRecord]],
) -> list[ImageVersion]:
    """One row per service and image, from its running containers as (service, ref, image):
    a service whose replicas run two images (a roll under way, or cut short) gets two rows."""
    counted: dict[tuple[str, str, str], tuple[ImageRecord, int]] = {}
    for service, ref, record in containers:
        key = (service, ref, record.image_id)
        seen = counted.get(key)
        counted[key] = (record, (seen[1] if seen else 0) + 1)
    return [
        _row(service, ref, record, count)
        for (service, ref, _), (record, count) in sorted(counted.items())
    ]


def _row(service: str, ref: str, record: ImageRecord | None, containers: int) -> ImageVersion:
    return ImageVersion(
        service=service,
        ref=ref,
        image_id=record.image_id if record else None,
        digest=record.digests[0].rsplit("@", 1)[-1] if record and record.digests else None,
        version=record.labels.get(VERSION_LABEL) if record else None,
        containers=containers,
    )


def mismatches(versions: Versions) -> list[str]:
    """What does not match this orbisctl, each with what to do."""
    found = []
    by_service: dict[str, list[ImageVersion]] = {}
    for image in versions.images:
        by_service.setdefault(image.service, []).append(image)
    for service, images in by_service.items():
        if len(images) > 1:
            found.append(
                f"{service} runs {len(images)} different images (a roll under way or cut "
                "short): `orbisctl up` brings every replica to the configured one"
            )
    for image in versions.images:
        if image.image_id is None:
            found.append(f"{image.ref} is not on this engine: `orbisctl images build` makes it")
        elif image.ours and image.version != versions.cli:
            # With the stack down the rows are images, not services.
            subject = f"{image.service} runs" if image.containers else f"{image.ref} is"
            found.append(
                f"{subject} {image.version or 'an unversioned image'}, this orbisctl is "
                f"{versions.cli}: `orbisctl upgrade` moves the install to this checkout's release"
            )
    schema = versions.database.schema if versions.database else None
    if schema is not None and schema > versions.code_schema:
        found.append(
            f"the database's schema ({schema}) is newer than this code knows "
            f"({versions.code_schema}): this orbisctl is older than the install's release"
        )
    elif versions.database and (schema or 0) < versions.code_schema:
        found.append(
            f"the database's schema is {schema or 'empty'}, this code's is "
            f"{versions.code_schema}: "
            + ("`orbisctl up`" if schema is None else "`orbisctl upgrade`")
            + " applies the new migrations"
        )
    return found


def installed_versions(install: Install | None) -> Versions:
    """The versions of this orbisctl and, given an install, of what it runs."""
    cli, code_schema = __version__, code_schema_version()
    if install is None:
        return Versions(
            cli,
            code_schema,
            notes=[
                "no install here (no orbis.yaml): --dir names one, to show its images and database"
            ],
        )
    try:
        client = engine.connect()
    except EngineError as exc:
        return Versions(cli, code_schema, notes=[exc.message])
    running = [
        (container.labels[engine.SERVICE_LABEL], container)
        for container in install.containers(client)
        if container.status == "running"
    ]
    notes: list[str] = []
    if running:
        # One inspection per image, not per container (replicas share theirs).
        records = {
            image_id: _image(client, image_id)
            for image_id in {str(container.attrs.get("Image", "")) for _, container in running}
        }
        images = running_images(
            (service, _configured_ref(container), records[str(container.attrs.get("Image", ""))])
            for service, container in running
        )
        database = None
        if any(service == POSTGRES_SERVICE for service, _ in running):
            try:
                database = database_version(ComposeExecutor(install.compose(), install.secrets_dir))
            except EngineError as exc:
                notes.append(f"the database's version could not be read: {exc.message}")
        else:
            notes.append("postgres is not running: the database's versions are not shown")
    else:
        images = _configured_images(client, install)
        database = None
        notes.append("the stack is not running: the images shown are the configured ones")
    versions = Versions(cli, code_schema, images, database, notes)
    versions.notes.extend(mismatches(versions))
    return versions


def database_version(executor: ComposeExecutor) -> DatabaseVersion:
    with psql_session(executor, executor.database) as session:
        server = session.scalar("SELECT current_setting('server_version')")
        number = int(session.scalar("SELECT current_setting('server_version_num')"))
        schema = database_schema_version(session)
    # `15.10 (Debian 15.10-0+deb12u1)`: the version is the first word.
    return DatabaseVersion(schema, server.split()[0], number // 10000)


def _configured_ref(container: Any) -> str:
    return str((container.attrs.get("Config") or {}).get("Image") or container.attrs.get("Image"))


def _image(client: docker.DockerClient, image_id: str) -> ImageRecord:
    try:
        return image_record(client.images.get(image_id))
    except docker.errors.ImageNotFound:
        # Removed (or re-tagged and pruned) since the container started: its id is all.
        return ImageRecord(image_id, (), {})
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine.api_error(f"inspecting image {image_id}", exc) from None


def _configured_images(client: docker.DockerClient, install: Install) -> list[ImageVersion]:
    rows = []
    refs = asdict(image_refs(install.config))
    if refs["migrate"] == refs["runtime"]:
        del refs["migrate"]  # one image, one row
    for role, ref in refs.items():
        try:
            record: ImageRecord | None = image_record(client.images.get(ref))
        except docker.errors.ImageNotFound:
            record = None
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine.api_error(f"inspecting {ref}", exc) from None
        rows.append(_row(role, ref, record, 0))
    return rows
