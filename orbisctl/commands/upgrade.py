"""`orbisctl upgrade`: to this checkout's release, guarded, rolled back by itself on failure."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orbisctl import output
from orbisctl.commands.backup_context import BackupContext
from orbisctl.commands.options import InstallDirOption, JsonOption
from orbisctl.core.errors import UserError
from orbisctl.core.install import open_install
from orbisctl.core.progress import Progress

if TYPE_CHECKING:
    from orbisctl.upgrade.journal import UpgradeRecord
    from orbisctl.upgrade.run import BackupPort, Finished, Plan

app = typer.Typer()


def _backup_port(directory: Path, progress: Progress) -> BackupPort:
    from backups.catalog import resolve
    from backups.restore import restore_backup
    from orbisctl.commands.backup import take_backup
    from orbisctl.upgrade.run import BackupPort

    def take(label: str) -> str:
        ctx = BackupContext(directory, None, None)
        # A release from before continuous archiving runs a postgres without pgBackRest:
        # its pre-upgrade backup is the bundle alone.
        archived = ctx.archiving() and _runs_pgbackrest(ctx)
        if ctx.archiving() and not archived:
            progress.note("the running postgres has no pgBackRest: the backup bundle only")
        taken = take_backup(ctx, label, progress, base_backups=archived)
        backup_id = str(taken.manifest.backup_id)
        # Kept here either way: an upgrade does not wait for the bucket.
        if taken.copy_error is not None:
            progress.note(
                f"backup {backup_id} is kept here, but copying it to backup.remote failed: "
                f"{taken.copy_error.message}"
            )
        return backup_id

    def restore_database(backup_id: str) -> None:
        ctx = BackupContext(directory, None, None)
        restore_backup(
            ctx.install,
            ctx.executor(),
            ctx.ring(),
            resolve(ctx.install, backup_id),
            app=ctx.app_control(),
            passphrase=None,
            with_secrets=False,
            safety_backup=True,
            keep_previous_databases=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )

    return BackupPort(take, restore_database)


def _runs_pgbackrest(ctx: BackupContext) -> bool:
    from orbisctl.core.errors import EngineError

    try:
        ctx.install.compose().exec("postgres", ["pgbackrest", "version"], timeout=60)
    except EngineError:
        return False
    return True


def _print_plan(found: Plan, as_json: bool) -> None:
    if as_json:
        output.print_json(
            {
                "from": found.from_version,
                "to": found.to_version,
                "steps": [{"name": s.name, "summary": s.summary} for s in found.steps],
                "problems": found.problems,
                "notes": found.notes,
            }
        )
        return
    output.info(f"upgrade {escape(found.from_version)} → {escape(found.to_version)}:")
    for number, step in enumerate(found.steps, start=1):
        output.info(f"  {number}. {escape(step.name)}: {escape(step.summary)}")
    for note in found.notes:
        output.info(escape(note))
    for problem in found.problems:
        output.warn(f"cannot start: {problem}")


def _print_finished(finished: Finished, as_json: bool) -> None:
    record = finished.record
    if as_json:
        output.print_json({**asdict(record), "facts": finished.facts})
        return
    for timing in record.timings:
        output.aside(f"{timing.kind} {timing.name}: {timing.seconds:.1f} s")
    if record.outcome == "upgraded":
        output.info(
            f"[green]upgraded {escape(record.from_version)} → {escape(record.to_version)}[/] "
            f"in {record.seconds:.0f} s (pre-upgrade backup "
            f"{escape(finished.facts.get('backup', '-'))}); `orbisctl upgrade --rollback` goes back"
        )
        return
    if finished.facts.get("requested"):
        output.info(f"[green]rolled back to {escape(record.from_version)}[/]")
        return
    restored = finished.facts.get("database_restored")
    database = (
        f", its database restored from the pre-upgrade backup {restored} (what was written "
        "during the upgrade is not in it)"
        if restored
        else ""
    )
    output.warn(
        f"the upgrade to {record.to_version} did not complete ({record.detail}); the install "
        f"was rolled back and runs {record.from_version} again{database}"
    )


def history_table(records: list[UpgradeRecord]) -> Table:
    table = Table(title="upgrades", title_justify="left")
    for column in ("finished", "from", "to", "outcome", "seconds", "by", "detail"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.finished_at,
            escape(record.from_version),
            escape(record.to_version),
            record.outcome,
            f"{record.seconds:.0f}",
            escape(record.actor),
            escape(record.detail or "-"),
        )
    return table


@app.command()
def upgrade(
    directory: InstallDirOption = Path(),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and what stops it; change nothing.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an unfinished (killed) upgrade or rollback.")
    ] = False,
    rollback: Annotated[
        bool,
        typer.Option(
            "--rollback",
            help="Turn an unfinished upgrade back, or return a finished one to its release.",
        ),
    ] = False,
    show_history: Annotated[
        bool, typer.Option("--history", help="List the install's past upgrades.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Upgrade to this checkout's release: checked, backed up, rolled, rolled back on failure.

    Preflight (every problem at once), a pre-upgrade backup, the new images beside the old,
    migrations while the old release serves, api and gateway replaced one replica at a time,
    the other services recreated, a health gate; any failure rolls back by itself."""
    from orbisctl.upgrade import run

    if sum((dry_run, resume, rollback, show_history)) > 1:
        raise UserError(
            "--dry-run, --resume, --rollback and --history go one at a time",
            hint="orbisctl upgrade --dry-run, then orbisctl upgrade",
        )
    install = open_install(directory)
    if show_history:
        records = run.history(install.root)
        if as_json:
            output.print_json([asdict(record) for record in records])
        elif records:
            output.print_table(history_table(records))
        else:
            output.info("no upgrades yet")
        return
    if dry_run:
        from orbisctl.core import engine
        from orbisctl.core.errors import EngineError

        try:
            client = engine.connect()
        except EngineError:
            client = None
        _print_plan(run.plan(install, client), as_json)
        return
    with output.StepReporter() as progress:
        backups = _backup_port(install.root, progress)
        if resume or (rollback and run.unfinished(install.root) is not None):
            finished = run.resume(
                install.root, backups, mode="rollback" if rollback else None, progress=progress
            )
        elif rollback:
            finished = run.roll_back_finished(install.root, backups, progress=progress)
        else:
            finished = run.start(install, backups, progress=progress)
    _print_finished(finished, as_json)
    if finished.record.outcome != "upgraded" and not finished.facts.get("requested"):
        raise typer.Exit(1)
