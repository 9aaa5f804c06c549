"""`orbisctl backup …`: thin commands over the `backups` engine (`orbisctl restore` is
orbisctl/commands/restore.py).

Plain `orbisctl backup` (no sub-command) takes a backup of the install in the current
directory (or `$ORBIS_DIR`), so the muscle-memory form works; the sub-commands are for
everything else.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from backups import schedule
from orbisctl import output
from orbisctl.commands import backup_remote
from orbisctl.commands.backup_context import (
    BackupContext,
    DatabaseUrlOption,
    PassphraseFileOption,
    RedisUrlOption,
    read_passphrase,
)
from orbisctl.commands.backup_remote import describe_push, on_bundle_copies, raise_after_local
from orbisctl.commands.options import InstallDirOption, JsonOption
from orbisctl.commands.restore import converge
from orbisctl.commands.schedules import schedule_command
from orbisctl.core.errors import OrbisError, UserError
from orbisctl.core.progress import Progress
from orbisctl.core.units import format_size

if TYPE_CHECKING:
    from backups.archive_stack import BaseBackupResult
    from backups.manifest import Manifest
    from backups.remote_copies import PushResult, RemotePrunePlan
    from backups.retention import PrunePlan

# The backups engine (psycopg, aiohttp, cryptography, google-genai through the drill's probes)
# and the Docker client are imported inside the commands that use them: `orbisctl --help` must
# not pay for them.

app = typer.Typer(help="Take, list, verify, prune and schedule backups.")
app.add_typer(backup_remote.app, name="remote")


@dataclass(frozen=True)
class TakenBackup:
    manifest: Manifest
    bases: list[BaseBackupResult]  # pgBackRest's base backups, one per repository
    copies: list[PushResult]  # the bundles copied to backup.remote
    copy_error: OrbisError | None  # copying to backup.remote failed (the backup is kept here)


def take_backup(
    ctx: BackupContext, label: str, progress: Progress, *, base_backups: bool = True
) -> TakenBackup:
    """A backup bundle, a base backup when archiving (and `base_backups`), and the bundles'
    copies to the bucket: what `backup create` and `upgrade`'s pre-upgrade backup take."""
    from backups.create import create_backup
    from backups.remote_copies import push_pending

    result = create_backup(ctx.install, ctx.executor(), ctx.ring(), label=label, progress=progress)
    bases: list[BaseBackupResult] = []
    if base_backups and ctx.archiving():
        from backups.archive_stack import take_base_backups

        bases = take_base_backups(ctx.install, progress=progress)
    # Every local backup the bucket lacks: the new one and any an outage kept from it.
    pushed, copy_error = on_bundle_copies(
        ctx.install, lambda copies: push_pending(copies, ctx.install.repository, progress=progress)
    )
    return TakenBackup(result, bases, pushed or [], copy_error)


def _create(
    directory: Path, database_url: str | None, redis_url: str | None, label: str, as_json: bool
) -> None:
    ctx = BackupContext(directory, database_url, redis_url)
    # Back up what serves, not a half-switched install; a scheduled backup so finishes an
    # interrupted restore unattended.
    converge(ctx, as_json=as_json)
    started = time.monotonic()
    with output.StepReporter() as progress:
        taken = take_backup(ctx, label, progress)
    result, bases, copies, copy_error = taken.manifest, taken.bases, taken.copies, taken.copy_error
    elapsed = time.monotonic() - started
    size = sum(component.size for component in result.components.values())
    if as_json:
        described = [
            {
                "repo": base.repo,
                "label": base.label,
                "type": base.kind.value,
                "seconds": round(base.seconds, 2),
            }
            for base in bases
        ]
        output.print_json(
            {
                "id": result.backup_id,
                "size": size,
                "seconds": round(elapsed, 2),
                "row_counts": result.row_counts,
                # The local repository's (repository 1), and every repository's.
                "base_backup": described[0] if described else None,
                "base_backups": described,
                "remote_copies": [
                    {"id": copy.backup_id, "uploaded_bytes": copy.uploaded_bytes} for copy in copies
                ],
            }
        )
    else:
        escrow_note = "" if result.has_escrow else " (no passphrase escrow: see `backup escrow`)"
        output.info(
            f"[green]backup {escape(result.backup_id)}[/] {format_size(size)} in "
            f"{elapsed:.1f} s, {sum(result.row_counts.values())} rows in "
            f"{len(result.row_counts)} tables{escrow_note}"
        )
        for base in bases:
            output.info(
                f"[green]pgBackRest {base.kind.value} base backup {escape(base.label)}[/] "
                f"into repository {base.repo} in {base.seconds:.1f} s"
            )
        for copy in copies:
            if copy.uploaded_bytes:
                output.info(describe_push(copy))
    raise_after_local(
        copy_error,
        done=f"backup {result.backup_id} is kept here",
        failed="copying it to backup.remote",
        retry="`orbisctl backup remote push` copies it",
    )


@app.callback(invoke_without_command=True)
def _backup_group(
    ctx: typer.Context,
    directory: InstallDirOption = Path(),
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
) -> None:
    """Take, list, verify, prune and schedule backups (plain `backup` takes one)."""
    if ctx.invoked_subcommand is None:
        _create(directory, database_url, redis_url, "", as_json=False)
        return
    given = [
        name
        for name in ("directory", "database_url", "redis_url")
        if (source := ctx.get_parameter_source(name)) is not None and source.name == "COMMANDLINE"
    ]
    if given:
        raise UserError(
            f"options before `{ctx.invoked_subcommand}` apply only to a plain `orbisctl backup`",
            hint=f"put them after it: orbisctl backup {ctx.invoked_subcommand} --dir …",
        )


@app.command("create")
def create_command(
    directory: InstallDirOption = Path(),
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
    label: Annotated[str, typer.Option(help="A note stored in the manifest.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Back up the database, Redis and the config + secrets, encrypted, into backups/."""
    _create(directory, database_url, redis_url, label, as_json)


@app.command("list")
def list_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """List the backups in the repository, oldest first."""
    from backups.catalog import list_backups

    ctx = BackupContext(directory, None, None)
    entries = list_backups(ctx.install.repository)
    if as_json:
        output.print_json(
            [
                {
                    "id": entry.backup_id,
                    "path": str(entry.path),
                    "size": entry.size,
                    "created_at": entry.manifest.created_at.isoformat() if entry.manifest else None,
                    "label": entry.manifest.label if entry.manifest else None,
                    "schema_version": entry.manifest.schema_version if entry.manifest else None,
                    "key_ids": entry.manifest.key_ids if entry.manifest else [],
                    "escrow": entry.manifest.has_escrow if entry.manifest else False,
                    "problem": entry.problem or None,
                }
                for entry in entries
            ]
        )
        return
    if not entries:
        output.info(f"no backups in {escape(str(ctx.install.repository))}")
        return
    # The id is the creation time (UTC), so no separate time column: room for the label.
    table = Table(output.id_column("id (UTC time)"), "size", "schema", "opens with", "label")
    for column in table.columns[1:4]:
        column.no_wrap = True
    for entry in entries:
        info = entry.manifest
        if info is None:
            table.add_row(escape(entry.path.name), "", "", "", f"[red]{escape(entry.problem)}[/]")
            continue
        opens_with = ", ".join(info.key_ids) + (" + passphrase" if info.has_escrow else "")
        table.add_row(
            escape(info.backup_id),
            format_size(entry.size),
            str(info.schema_version or "-"),
            escape(opens_with),
            escape(info.label),
        )
    output.print_table(table)


@app.command("status")
def status_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """Continuous archiving: what each repository can restore to, the archive lag, the
    newest base backup."""
    from backups.archive_stack import archive_report, stack_pgbackrest

    ctx = BackupContext(directory, None, None)
    if not ctx.archiving():
        raise UserError(
            "continuous archiving is off for this install",
            hint="set backup.archive.enabled: true (target compose) in orbis.yaml, then "
            "`orbisctl render` and `orbisctl up`",
        )
    report = archive_report(stack_pgbackrest(ctx.install), ctx.executor())
    if as_json:
        output.print_json(report.to_json())
        return
    archiver = report.archiver
    if archiver.failing:
        output.info(
            f"[red]archiving is failing[/]: segment {escape(archiver.last_failed_wal or '')} "
            f"last failed at {archiver.last_failed_at:%Y-%m-%d %H:%M:%S} UTC; it waits in "
            "pg_wal and is retried (see `orbisctl logs postgres`)"
        )
    lag = "none archived yet" if archiver.lag_seconds is None else f"{archiver.lag_seconds:.0f} s"
    output.info(
        f"archived {archiver.archived_count} WAL segments, the last {lag} ago "
        f"(now writing {escape(archiver.current_wal)})"
    )
    table = Table("repository", "status", "restorable window (UTC)", "newest base backup")
    for repo in report.repositories:
        newest = repo.state.newest
        table.add_row(
            str(repo.state.repo),
            escape(repo.state.status),
            repo.window.describe() if repo.window else "[yellow]none: no base backup yet[/]",
            "-"
            if newest is None
            else f"{escape(newest.label)} ({newest.kind.value}, {newest.stopped:%Y-%m-%d %H:%M:%S})",
        )
    output.print_table(table)


@app.command("verify")
def verify_command(
    backup: Annotated[
        str | None, typer.Argument(help="Backup id or path (default: the newest).")
    ] = None,
    directory: InstallDirOption = Path(),
    deep: Annotated[
        bool, typer.Option("--deep", help="Also restore into a throwaway database and count rows.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a backup: checksums, decryption and authentication, dump readable (--deep: restore).

    With continuous archiving, pgBackRest's repositories are verified as well.
    """
    from backups.catalog import latest_backup, resolve
    from backups.verify import open_backup, verify_backup

    ctx = BackupContext(directory, database_url, redis_url)
    path = resolve(ctx.install, backup) if backup else latest_backup(ctx.install)
    passphrase = read_passphrase(passphrase_file)
    offline = not deep and ctx.offline()
    with output.StepReporter() as progress:
        if offline:
            # A backup copied to a machine without the stack: everything but pg_restore --list.
            verified = open_backup(path, ctx.ring(), passphrase=passphrase, progress=progress)
        else:
            verified = verify_backup(
                path,
                ctx.ring(),
                ctx.executor(),
                passphrase=passphrase,
                deep=deep,
                progress=progress,
            )
        repositories: list[int] = []
        if not offline and ctx.archiving():
            from backups.archive_stack import verify_repositories

            repositories = verify_repositories(ctx.install, progress=progress)
    if as_json:
        output.print_json(
            {
                "id": verified.manifest.backup_id,
                "ok": True,
                "opened_with": verified.opened_with,
                "archive_entries": verified.archive_entries,
                "deep_row_counts": verified.deep_row_counts,
                "repositories_verified": repositories,
            }
        )
        return
    depth = (
        f", restored {sum((verified.deep_row_counts or {}).values())} rows that match the manifest"
        if deep
        else ""
    )
    listing = (
        "dump not listed (no stack here)" if offline else f"{verified.archive_entries} dump entries"
    )
    output.info(
        f"[green]ok[/] {escape(verified.manifest.backup_id)}: checksums, authentication "
        f"({escape(verified.opened_with)}), {listing}{depth}"
    )
    for repo in repositories:
        output.info(
            f"[green]ok[/] pgBackRest repository {repo}: every base backup file and WAL "
            "segment matches its checksum"
        )


@app.command("prune")
def prune_command(
    directory: InstallDirOption = Path(),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would go.")] = False,
    include_labelled: Annotated[
        bool,
        typer.Option(
            "--include-labelled",
            help="Apply the policy to labelled backups too (by default they are kept).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete backups outside backup.retention (keep-daily/weekly/monthly; never the newest,
    never a labelled one unless --include-labelled)."""
    from backups import retention

    ctx = BackupContext(directory, None, None)
    plan = retention.plan_prune(
        ctx.install.repository, ctx.config.backup.retention, include_labelled=include_labelled
    )
    if not dry_run:
        retention.apply_prune(ctx.install.repository, plan)
    remote, remote_error = on_bundle_copies(
        ctx.install,
        lambda copies: copies.prune(
            ctx.config.backup.retention, include_labelled=include_labelled, dry_run=dry_run
        ),
    )
    if as_json:
        output.print_json(
            {
                "dry_run": dry_run,
                "keep": plan.keep,
                "delete": plan.delete,
                "labelled": plan.labelled,
                "unreadable": plan.unreadable,
                "partial": [path.name for path in plan.partial],
                "remote": None
                if remote is None
                else {
                    "keep": remote.keep,
                    "delete": remote.delete,
                    "labelled": remote.labelled,
                    "incomplete": remote.incomplete,
                },
            }
        )
    else:
        _describe_prune(plan, remote, dry_run=dry_run)
    raise_after_local(
        remote_error,
        done="this host's plan is shown" if dry_run else "the backups here are pruned",
        failed="pruning backup.remote",
        retry="`orbisctl backup prune` again prunes it",
    )


def _describe_prune(plan: PrunePlan, remote: RemotePrunePlan | None, *, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for backup_id in plan.delete:
        output.info(f"{verb} {escape(backup_id)}")
    for path in plan.partial:
        output.info(f"{verb} {escape(path.name)} (an interrupted backup)")
    for name in plan.unreadable:
        output.warn(f"kept {name}: its manifest is unreadable (delete it by hand if unwanted)")
    labelled = (
        f" ({len(plan.labelled)} labelled, kept whatever the policy: `--include-labelled` "
        "applies it to them too)"
        if plan.labelled
        else ""
    )
    output.info(f"kept {len(plan.keep)} backup(s){labelled}, {verb} {len(plan.delete)}")
    if remote is not None:
        for backup_id in remote.delete:
            output.info(f"{verb} {escape(backup_id)} in backup.remote")
        for backup_id in remote.incomplete:
            output.info(f"{verb} {escape(backup_id)} in backup.remote (an interrupted copy)")
        output.info(
            f"backup.remote: kept {len(remote.keep)} backup(s), {verb} {len(remote.delete)}"
        )


app.command("schedule")(
    schedule_command(
        schedule.BACKUP_JOB,
        lambda config: config.backup.schedule,
        "Run `backup create` + `backup prune` at backup.schedule (systemd timer, else cron).",
    )
)


app.command("on-boot")(
    schedule_command(
        schedule.BOOT_JOB,
        lambda config: schedule.AT_BOOT,
        "Run `status` after every boot: it finishes or undoes a restore the reboot interrupted.",
    )
)


@app.command("escrow")
def escrow_command(
    directory: InstallDirOption = Path(),
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Set the passphrase that can open future backups on a host that lost secrets/.

    Only a public key derived from it is stored; keep the passphrase itself offline.
    """
    from backups import keys

    ctx = BackupContext(directory, None, None)
    passphrase = read_passphrase(passphrase_file)
    if passphrase is None:
        if not sys.stdin.isatty():
            raise UserError("no passphrase given", hint="pass --passphrase-file FILE")
        passphrase = typer.prompt("Escrow passphrase", hide_input=True, confirmation_prompt=True)
    if len(passphrase) < 12:
        raise UserError("the passphrase is shorter than 12 characters", hint="choose a longer one")
    keys.save_escrow(ctx.install.secrets_dir, passphrase)
    output.info("escrow set: backups from now on can also be opened with this passphrase")
