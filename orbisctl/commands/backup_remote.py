"""`orbisctl backup remote …`: the backup bundles' copies in backup.remote's bucket.

`backup create` copies each new backup there by itself (and any earlier one an outage of the
store kept from it) and `backup prune` applies the retention policy to the bucket too; these
commands are for looking (`list`), catching up by hand (`push`) and, on a new host, fetching a
bundle into the local repository (`pull`), which `restore` then reads as any other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from orbisctl import output
from orbisctl.commands.options import InstallDirOption, JsonOption
from orbisctl.core.errors import OrbisError, StorageError, UserError
from orbisctl.core.install import Install, open_install
from orbisctl.core.units import format_size

if TYPE_CHECKING:
    from backups.remote_copies import PushResult, RemoteCopies

app = typer.Typer(help="The backups' copies in backup.remote's bucket: list, push, pull.")

T = TypeVar("T")


def remote_copies(install: Install) -> RemoteCopies:
    """The install's bucket, or a one-line refusal when orbis.yaml sets no backup.remote."""
    from backups.remote_copies import RemoteCopies, install_bucket

    bucket = install_bucket(install)
    if bucket is None:
        raise UserError(
            "backup.remote is not set in orbis.yaml: the backups live on this host only",
            hint="add backup.remote (endpoint, bucket, …; docs/configuration.md) and its key "
            "files secrets/remote_access_key and secrets/remote_secret_key",
        )
    return RemoteCopies(bucket)


def on_bundle_copies(
    install: Install, work: Callable[[RemoteCopies], T]
) -> tuple[T | None, OrbisError | None]:
    """`work` done on the bucket `backup create` and `prune` keep the bundles' copies in (None
    without one); a failure is returned, not raised, so that what was done here is said
    first (`raise_after_local`)."""
    from backups.remote_copies import RemoteCopies, bundle_bucket

    try:
        bucket = bundle_bucket(install)
        return (None if bucket is None else work(RemoteCopies(bucket))), None
    except OrbisError as exc:
        return None, exc


def raise_after_local(error: OrbisError | None, *, done: str, failed: str, retry: str) -> None:
    """One line for a step on backup.remote that failed after the local one succeeded."""
    if error is not None:
        raise StorageError(
            f"{done}, but {failed} failed: {error.message}",
            hint="; then ".join(part for part in (error.hint, retry) if part),
        )


def describe_push(result: PushResult) -> str:
    if not result.uploaded_bytes:
        return f"backup {escape(result.backup_id)} is in backup.remote already"
    return (
        f"[green]copied backup {escape(result.backup_id)}[/] to backup.remote "
        f"({format_size(result.uploaded_bytes)} in {result.seconds:.1f} s)"
    )


@app.command("list")
def list_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """List the bundles in the bucket, oldest first; an interrupted copy shows as such."""
    copies = remote_copies(open_install(directory))
    bundles = copies.bundles()
    if as_json:
        output.print_json(
            [
                {
                    "id": bundle.backup_id,
                    "size": bundle.size,
                    "uploaded_at": bundle.modified.isoformat(),
                    "created_at": bundle.created_at.isoformat() if bundle.created_at else None,
                    "label": bundle.manifest.label if bundle.manifest else None,
                    "problem": bundle.problem or None,
                }
                for bundle in bundles
            ]
        )
        return
    if not bundles:
        output.info(f"no backups in {escape(copies.bucket.describe())}")
        return
    table = Table(output.id_column("id (UTC time)"), "size", "uploaded (UTC)", "label")
    for bundle in bundles:
        table.add_row(
            escape(bundle.backup_id),
            format_size(bundle.size),
            f"{bundle.modified:%Y-%m-%d %H:%M:%S}",
            f"[red]{escape(bundle.problem)}[/]"
            if bundle.manifest is None
            else escape(bundle.manifest.label),
        )
    output.print_table(table)


@app.command("push")
def push_command(
    backup: Annotated[
        str | None,
        typer.Argument(help="A backup id (default: every local backup the bucket lacks)."),
    ] = None,
    directory: InstallDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Copy local backups to the bucket (what is there already is not sent again)."""
    from backups.catalog import resolve
    from backups.remote_copies import push_pending

    install = open_install(directory)
    copies = remote_copies(install)
    with output.StepReporter() as progress:
        if backup is None:
            results = push_pending(copies, install.repository, progress=progress)
        else:
            results = [copies.push(resolve(install, backup), progress=progress)]
    if as_json:
        output.print_json(
            [
                {
                    "id": result.backup_id,
                    "uploaded_bytes": result.uploaded_bytes,
                    "seconds": round(result.seconds, 2),
                }
                for result in results
            ]
        )
        return
    if not results:
        output.info("backup.remote holds every local backup already")
    for result in results:
        output.info(describe_push(result))


@app.command("pull")
def pull_command(
    backup: Annotated[
        str, typer.Argument(help="A backup id from `backup remote list`, or latest.")
    ],
    directory: InstallDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Fetch a bundle from the bucket into the local repository, every file checked against
    its manifest; `orbisctl restore <id>` then restores it."""
    install = open_install(directory)
    copies = remote_copies(install)
    if backup == "latest":
        complete = copies.complete()
        if not complete:
            raise UserError(
                f"there is no complete backup in {copies.bucket.describe()}",
                hint="`orbisctl backup remote list` shows what is there",
            )
        backup = complete[-1].backup_id
    with output.StepReporter() as progress:
        path = copies.pull(backup, install.repository, progress=progress)
    if as_json:
        output.print_json({"id": backup, "path": str(path)})
        return
    output.info(
        f"[green]fetched backup {escape(backup)}[/] into {escape(str(path))}; "
        f"`orbisctl restore {escape(backup)}` restores it"
    )
