"""`orbisctl restore`, and finishing or undoing a restore an interruption left: thin commands
over the `backups` engine (`up`, `status` and a backup converge an unfinished restore too)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from orbisctl import output
from orbisctl.commands.options import InstallDirOption, JsonOption, YesOption
from orbisctl.core.errors import UserError
from orbisctl.core.units import format_size

if TYPE_CHECKING:
    from backups.restore import FinishedRestore

from orbisctl.commands.backup_context import (
    BackupContext,
    DatabaseUrlOption,
    PassphraseFileOption,
    RedisUrlOption,
    read_passphrase,
)

app = typer.Typer()


def _confirm(question: str, *, yes: bool, doing: str = "restore replaces live data") -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(
            f"{doing} and needs confirmation", hint="pass --yes to confirm without a prompt"
        )
    if not typer.confirm(question):
        raise UserError(f"{doing.split()[0]} cancelled")


def _restore_secrets_only(
    ctx: BackupContext, path: Path, *, yes: bool, passphrase_file: Path | None
) -> None:
    from backups.restore import restore_config_only

    running = ctx.running_services()
    if running:
        # Running containers keep the files they mounted, and `up` would not recreate them:
        # the stack would go on with the old secrets while secrets/ holds the restored ones.
        raise UserError(
            f"the stack is running ({', '.join(running)}); --secrets-only is for a new host, "
            "before `orbisctl up`",
            hint=f"on a running stack use `orbisctl restore {path.name} --with-secrets`",
        )
    _confirm(f"Replace orbis.yaml, secrets/ and tls/ in {ctx.root} from {path.name}?", yes=yes)
    with output.StepReporter() as progress:
        restored = restore_config_only(
            ctx.install,
            ctx.ring(),
            path,
            passphrase=read_passphrase(passphrase_file),
            progress=progress,
        )
    output.info(
        f"[green]restored orbis.yaml, secrets/ and tls/[/] of {escape(restored.backup_id)}; "
        f"next: orbisctl render, orbisctl up, orbisctl restore {escape(str(path))}"
    )


def finish_unfinished_restore(
    ctx: BackupContext, *, abort: bool = False, say: Callable[[str], None] = output.info
) -> FinishedRestore | None:
    """Finish or undo the install's interrupted restore, saying which (None: there is none)."""
    from backups import pitr
    from backups.restore import FinishedRestore, finish_restore

    if pitr.journals(ctx.install).load() is not None:
        with output.StepReporter() as progress:
            done = pitr.finish_pitr(
                ctx.install,
                ctx.app_control(),
                abort=abort,
                keep_previous=ctx.config.backup.keep_previous_databases,
                progress=progress,
            )
        if done is not None:
            say(
                f"[green]finished the interrupted restore {escape(done.label)}[/]: the restored "
                "cluster serves"
                if done.outcome == "finished"
                else f"[green]undid the interrupted restore {escape(done.label)}[/]: the "
                "previous data serves"
            )
            return FinishedRestore(done.label, done.outcome)
    with output.StepReporter() as progress:
        finished = finish_restore(
            ctx.install,
            ctx.executor(),
            ctx.app_control(),
            abort=abort,
            keep_previous_databases=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )
    if finished is not None:
        say(
            f"[green]finished the interrupted restore of {escape(finished.backup_id)}[/]: "
            "the restored data serves"
            if finished.outcome == "finished"
            else f"[green]undid the interrupted restore of {escape(finished.backup_id)}[/]: "
            "the previous data serves"
        )
    return finished


def converge_restore(directory: Path, *, as_json: bool = False) -> None:
    """For `up` and `status`: an interrupted restore is finished or undone now, not left
    with api and gateway stopped until someone notices; one that is running is left alone.
    With `as_json` what it says goes to stderr."""
    converge(BackupContext(directory, None, None), as_json=as_json)


def refuse_unfinished_switch(directory: Path) -> None:
    """For `up`: postgres must not start while a point-in-time restore's switch is unfinished
    (on a half-renamed volume its entrypoint would make a new, empty cluster)."""
    from backups import pitr

    journal = pitr.PitrJournalStore(directory.resolve()).load()
    if journal is not None and journal.phase == "verified":
        raise UserError(
            f"the switch of the point-in-time restore {journal.label} is unfinished",
            hint="`orbisctl restore --resume` finishes it and starts the stack",
        )


def converge(ctx: BackupContext, *, as_json: bool = False) -> None:
    """`converge_restore` on the servers of `ctx` (the stack's, or those of the URLs)."""
    from backups import pitr
    from backups.restore import restore_journals
    from backups.restore_lock import locked_backup

    point_in_time = pitr.journals(ctx.install).load()
    if restore_journals(ctx.install).load() is None and point_in_time is None:
        return
    say = output.aside if as_json else output.info
    holder = locked_backup(ctx.install.repository)
    if holder is not None:
        say(f"a restore (of {escape(holder)}) is running")
        return
    needed = {"postgres", "redis"}
    stopped = [] if ctx.database_url else sorted(needed - set(ctx.running_services()))
    # A point-in-time restore starts postgres itself, and only once its volume is whole.
    if stopped and point_in_time is None:
        if not needed <= set(ctx.created_services()):
            output.warn(
                "a restore was interrupted; it is finished or undone once the stack runs: "
                "`orbisctl up` starts it and does it"
            )
            return
        # The interrupted restore may have stopped Redis to install its snapshot.
        ctx.install.compose().run("start", *stopped, timeout=120)
    finish_unfinished_restore(ctx, say=say)


def _kept_databases(ctx: BackupContext, *, drop_kept: str | None, yes: bool, as_json: bool) -> None:
    """`restore --list-kept` / `--drop-kept NAME|all`: the previous databases restores kept."""
    from backups import kept
    from backups.restore_lock import locked_backup

    executor = ctx.executor()
    if drop_kept is not None:
        holder = locked_backup(ctx.install.repository)
        if holder is not None:
            raise UserError(
                f"a restore (of {holder}) is running", hint="wait for it to finish, then retry"
            )
        dropped = kept.select(executor, drop_kept)  # refuses a name that is not one
        if dropped:
            _confirm(
                f"Drop {', '.join(dropped)} ({executor.describe()})?",
                yes=yes,
                doing="dropping a previous database deletes its data",
            )
            kept.drop(executor, dropped)
        if as_json:
            output.print_json({"dropped": dropped})
            return
        for name in dropped:
            output.info(f"dropped {escape(name)}")
        if not dropped:
            output.info("no previous databases kept by restores")
        return
    rows = kept.list_kept(executor)
    if as_json:
        output.print_json([row.as_json() for row in rows])
        return
    if not rows:
        output.info("no previous databases kept by restores")
        return
    table = Table(output.id_column("name"), "kept at (UTC)", "size")
    for row in rows:
        table.add_row(
            escape(row.name), row.kept_at.strftime("%Y-%m-%d %H:%M:%S"), format_size(row.size)
        )
    output.print_table(table)
    output.info(
        f"{len(rows)} kept, {format_size(sum(row.size for row in rows))} in all; restores keep the "
        f"newest {ctx.config.backup.keep_previous_databases} (backup.keep_previous_databases)"
    )


@app.command("restore")
def restore_command(
    backup: Annotated[
        str | None,
        typer.Argument(help="Backup id (see `backup list`) or a path.", show_default=False),
    ] = None,
    directory: InstallDirOption = Path(),
    yes: YesOption = False,
    with_secrets: Annotated[
        bool, typer.Option("--with-secrets", help="Also restore orbis.yaml, secrets/ and tls/.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    secrets_only: Annotated[
        bool,
        typer.Option(
            "--secrets-only",
            help="Only restore orbis.yaml, secrets/ and tls/ (a new host, before `up`).",
        ),
    ] = False,
    no_safety_backup: Annotated[
        bool,
        typer.Option("--no-safety-backup", help="Skip the backup of the current state first."),
    ] = False,
    list_kept: Annotated[
        bool,
        typer.Option(
            "--list-kept", help="List the previous databases restores kept (name, when, size)."
        ),
    ] = False,
    drop_kept: Annotated[
        str | None,
        typer.Option(
            "--drop-kept",
            metavar="NAME|all",
            help="Drop a previous database a restore kept, or all of them.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Finish a restore that was interrupted (or undo it)."),
    ] = False,
    abort: Annotated[
        bool,
        typer.Option(
            "--abort", help="Undo a restore that was interrupted before its database switch."
        ),
    ] = False,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time",
            metavar="'YYYY-MM-DD HH:MM:SS[+TZ]'",
            help="Restore the database to this moment from the archived WAL (UTC without a zone).",
            show_default=False,
        ),
    ] = None,
    to_latest: Annotated[
        bool,
        typer.Option(
            "--to-latest",
            help="Restore the database to the last archived WAL (api and gateway stop first).",
        ),
    ] = False,
    repo: Annotated[
        int,
        typer.Option(
            "--repo",
            min=1,
            help="The pgBackRest repository --to-time/--to-latest read: 1 local, 2 backup.remote.",
        ),
    ] = 1,
    database_url: DatabaseUrlOption = None,
    redis_url: RedisUrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup; the current data keeps serving until all is ready to switch.

    The switch (database, Redis, with --with-secrets the files) stops api and gateway.

    For those seconds nginx answers 503 with Retry-After; calls reconnect after.

    An interrupted restore is finished or undone by `restore --resume`, `up` or `status`.

    The replaced database is kept as orbis_pre_restore_<time>, bounded by
    backup.keep_previous_databases.
    """
    from backups.catalog import resolve
    from backups.restore import restore_backup

    ctx = BackupContext(directory, database_url, redis_url)
    if resume or abort:
        if backup is not None or (resume and abort):
            raise UserError(
                "--resume and --abort go alone: no backup, not both",
                hint="orbisctl restore --resume; orbisctl restore --abort",
            )
        finished = finish_unfinished_restore(ctx, abort=abort)
        if as_json:
            output.print_json(finished.__dict__ if finished else None)
        elif finished is None:
            output.info("no unfinished restore")
        return
    if list_kept or drop_kept is not None:
        if backup is not None or (list_kept and drop_kept is not None):
            raise UserError(
                "--list-kept and --drop-kept go alone: no backup, not both",
                hint="orbisctl restore --list-kept; orbisctl restore --drop-kept NAME|all",
            )
        _kept_databases(ctx, drop_kept=drop_kept, yes=yes, as_json=as_json)
        return
    if to_time is not None or to_latest:
        if backup is not None or with_secrets or secrets_only or (to_time and to_latest):
            raise UserError(
                "--to-time and --to-latest restore the database from the archive: no backup, "
                "no --with-secrets or --secrets-only, not both",
                hint="orbisctl restore --to-time '2026-01-31 13:45:00'; orbisctl restore "
                "--to-latest",
            )
        _restore_to_time(
            ctx, to_time, repo=repo, yes=yes, safety_backup=not no_safety_backup, as_json=as_json
        )
        return
    if backup is None:
        raise UserError(
            "which backup? give its id (`orbisctl backup list`) or a path",
            hint="`orbisctl restore --list-kept` lists the previous databases restores kept",
        )
    path = resolve(ctx.install, backup)
    if secrets_only:
        _restore_secrets_only(ctx, path, yes=yes, passphrase_file=passphrase_file)
        return
    executor = ctx.executor()
    _confirm(f"Replace the data of {executor.describe()} with backup {path.name}?", yes=yes)
    with output.StepReporter() as progress:
        result = restore_backup(
            ctx.install,
            executor,
            ctx.ring(),
            path,
            app=ctx.app_control(),
            passphrase=read_passphrase(passphrase_file),
            with_secrets=with_secrets,
            safety_backup=not no_safety_backup,
            keep_previous_databases=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )
    if as_json:
        output.print_json(result.__dict__)
        return
    output.info(
        f"[green]restored {escape(result.backup_id)}[/] into {escape(result.database)}: "
        f"{sum(result.row_counts.values())} rows match the manifest"
    )
    if not ctx.database_url:  # the stack's api and gateway were stopped for the switch
        output.info(
            f"api and gateway were unavailable for {result.switch_seconds:.1f} s "
            "(nginx answered 503 with Retry-After meanwhile)"
        )
    if result.safety_backup:
        output.info(f"safety backup of the previous state: {escape(result.safety_backup)}")
    if result.previous_database and result.previous_database not in result.dropped_databases:
        output.info(
            f"previous database kept as {escape(result.previous_database)} "
            "(`orbisctl restore --drop-kept NAME` drops it once you are satisfied)"
        )
    for name in result.dropped_databases:
        output.info(
            f"dropped {escape(name)}: beyond backup.keep_previous_databases "
            f"({ctx.config.backup.keep_previous_databases})"
        )
    if result.restored_config:
        output.info("orbis.yaml, secrets/ and tls/ restored: run `orbisctl render` and `up`")


def _restore_to_time(
    ctx: BackupContext,
    to_time: str | None,
    *,
    repo: int,
    yes: bool,
    safety_backup: bool,
    as_json: bool,
) -> None:
    """`restore --to-time` / `--to-latest`: the stack's cluster from pgBackRest's archive."""
    from backups import pitr

    if ctx.database_url:
        raise UserError(
            "point-in-time restore works on the install's own stack, not on servers given by URL",
            hint="drop --database-url and --redis-url (and ORBIS_BACKUP_*_URL)",
        )
    if not ctx.archiving():
        raise UserError(
            "point-in-time restore needs continuous archiving, which is off for this install",
            hint="set backup.archive.enabled: true (target compose) in orbis.yaml, then "
            "`orbisctl render`, `orbisctl up` and `orbisctl backup create`",
        )
    target = pitr.parse_target(to_time) if to_time is not None else None
    executor = ctx.executor()
    moment = f"{target:%Y-%m-%d %H:%M:%S %Z}" if target else "the latest archived WAL"
    _confirm(
        f"Restore the database of {executor.describe()} to {moment}? What was written after "
        "it is kept only in the safety backup and the previous data directory.",
        yes=yes,
    )
    with output.StepReporter() as progress:
        result = pitr.restore_stack_to_time(
            ctx.install,
            executor,
            ctx.app_control(),
            ctx.ring(),
            target,
            repo=repo,
            safety_backup=safety_backup,
            keep_previous=ctx.config.backup.keep_previous_databases,
            progress=progress,
        )
    if as_json:
        output.print_json(result.__dict__)
        return
    output.info(
        f"[green]restored the database to {escape(moment)}[/]: the newest transaction "
        f"replayed is of {escape(result.recovered_to or 'unknown time')}; "
        f"{sum(result.row_counts.values())} rows in {len(result.row_counts)} tables"
    )
    output.info(
        f"api and gateway were unavailable for {result.switch_seconds:.1f} s "
        "(nginx answered 503 with Retry-After meanwhile)"
    )
    if result.safety_backup:
        output.info(f"safety backup of the previous state: {escape(result.safety_backup)}")
    output.info(
        f"previous data directory kept in the postgres volume as {escape(result.kept_as)} "
        f"(the newest {ctx.config.backup.keep_previous_databases} are kept)"
    )
    if result.full_backup:
        output.info(f"full base backup of the new timeline: {escape(result.full_backup)}")
    else:
        output.warn(
            f"the full base backup after the restore failed ({escape(result.full_backup_error)});"
            " run `orbisctl backup create`"
        )
