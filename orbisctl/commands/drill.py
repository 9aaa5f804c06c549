"""`orbisctl drill …`: recovery drills (restore into a scratch stack, check, tear down).

`orbisctl drill [ID|PATH]` runs one (the newest backup by default): anything that is not a
sub-command is taken as `drill run`'s arguments, so the short form works as the issue names it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer._click import Context
from typer.core import TyperGroup

from backups import schedule
from orbisctl import output
from orbisctl.commands.backup_context import BackupContext
from orbisctl.commands.options import InstallDirOption, JsonOption
from orbisctl.commands.schedules import schedule_command
from orbisctl.core.errors import CheckFailed

if TYPE_CHECKING:
    from backups.drill import DrillReport


class _RunByDefault(TyperGroup):
    """`drill`, `drill ID` and `drill --dir X` mean `drill run …`."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Recovery drills: restore a backup into a scratch stack and prove it serves.",
)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _verdict(ok: bool | None) -> str:
    return "[dim]skipped[/]" if ok is None else "[green]pass[/]" if ok else "[red]FAIL[/]"


def _summary(report: DrillReport) -> None:
    table = Table("check", "result", "detail")
    for check in report.checks:
        table.add_row(escape(check.name), _verdict(check.ok), escape(check.detail))
    output.print_table(table)
    rto = f"{report.rto_seconds:.0f} s" if report.rto_seconds is not None else "not reached"
    output.info(
        f"RTO {rto} (objective {report.rto_objective_seconds // 60} min, "
        f"{'met' if report.rto_met else 'NOT met'}); RPO {report.rpo_seconds / 3600:.1f} h "
        f"(objective {report.rpo_objective_seconds // 3600} h, "
        f"{'met' if report.rpo_met else 'NOT met'})"
    )


@app.command("run")
def run_command(
    backup: Annotated[
        str | None, typer.Argument(help="Backup id or path (default: the newest).")
    ] = None,
    directory: InstallDirOption = Path(),
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into an isolated scratch stack, check it serves, measure RTO/RPO."""
    from backups.catalog import latest_backup, resolve
    from backups.drill import drills_dir, run_drill

    ctx = BackupContext(directory, None, None)
    path = resolve(ctx.install, backup) if backup else latest_backup(ctx.install)
    # systemd stops a unit with SIGTERM: the scratch stack must still be torn down.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with output.StepReporter() as progress:
            report = run_drill(ctx.install, ctx.config, ctx.ring(), path, on_step=progress.step)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report_path = drills_dir(ctx.install) / f"{report.drill_id}.md"
    if as_json:
        output.print_json(report.as_json())
    else:
        _summary(report)
        output.info(f"report: {escape(str(report_path))}")
    if not report.ok:
        reasons = [report.error] if report.error else []
        reasons += [f"{check.name} failed" for check in report.failed_checks]
        if not report.rto_met and report.rto_seconds is not None:
            reasons.append("RTO objective missed")
        if not report.rpo_met:
            reasons.append("RPO objective missed (the backup is too old)")
        raise CheckFailed(
            f"drill {report.drill_id} of backup {report.backup_id} failed: " + "; ".join(reasons),
            hint=f"read {report_path}",
        )
    if not as_json:
        output.info(f"[green]drill {escape(report.drill_id)} passed[/]")


@app.command("history")
def history_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """Past drills, oldest first: verdict, RTO, RPO, failed checks."""
    from backups.drill import history

    ctx = BackupContext(directory, None, None)
    reports = history(ctx.install)
    if as_json:
        output.print_json([report.as_json() for report in reports])
        return
    if not reports:
        output.info("no drill has run yet: `orbisctl drill` runs one")
        return
    table = Table(
        output.id_column("drill (UTC time)"),
        output.id_column("backup"),
        "result",
        "RTO",
        "RPO",
        "problem",
    )
    for report in reports:
        rto = f"{report.rto_seconds:.0f} s" if report.rto_seconds is not None else "-"
        problem = report.error or ", ".join(check.name for check in report.failed_checks)
        if not problem and not report.ok:
            problem = "objective missed"
        row: list[Any] = [
            escape(report.drill_id),
            escape(report.backup_id),
            "[green]passed[/]" if report.ok else "[red]FAILED[/]",
            rto,
            f"{report.rpo_seconds / 3600:.1f} h",
            escape(problem),
        ]
        table.add_row(*row)
    output.print_table(table)


@app.command("cleanup")
def cleanup_command(directory: InstallDirOption = Path(), as_json: JsonOption = False) -> None:
    """Remove what killed drills left (scratch stacks, volumes, directories); record them failed.

    Every drill does this first; this runs it alone. Drills still running are left alone.
    """
    from backups.drill import remove_leftovers

    ctx = BackupContext(directory, None, None)
    removed = remove_leftovers(ctx.install)
    if as_json:
        output.print_json({"removed": removed})
        return
    for project in removed:
        output.info(f"removed the scratch stack {escape(project)} of a killed drill")
    output.info(f"{len(removed)} leftover drill(s) removed")


app.command("schedule")(
    schedule_command(
        schedule.DRILL_JOB,
        lambda config: config.backup.drill_schedule,
        "Run `drill` at backup.drill_schedule (monthly by default; systemd timer, else cron).",
    )
)
