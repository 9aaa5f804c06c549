"""`schedule` commands of the verb groups (backup, drill, tls): a systemd timer, or a cron
entry where systemd does not run, at the schedule orbis.yaml gives."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from backups import schedule
from backups.fs import atomic_write
from orbisctl import output
from orbisctl.commands.backup_context import BackupContext
from orbisctl.commands.options import InstallDirOption
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import EngineError

ScheduleDirOption = Annotated[Path, typer.Option(help="Where systemd units go.")]
CronDirOption = Annotated[Path, typer.Option(help="Where the cron entry goes.")]
PrintOnlyOption = Annotated[
    bool, typer.Option("--print", help="Print the files instead of installing them.")
]
CronOption = Annotated[
    bool, typer.Option("--cron", help="Write a cron entry even where systemd runs.")
]


def install_schedule(
    directory: Path,
    job: schedule.Job,
    expression_of: Callable[[OrbisConfig], str],
    *,
    print_only: bool,
    cron: bool,
    unit_dir: Path,
    cron_dir: Path,
) -> None:
    """Write (or print) the systemd timer or cron entry running `job` at the schedule
    `expression_of` reads from orbis.yaml."""
    ctx = BackupContext(directory, None, None)
    expression = expression_of(ctx.config)
    use_systemd = not cron and schedule.systemd_running()
    kwargs: dict[str, Any] = {
        "project": ctx.config.project_name,
        "install_root": ctx.root,
        "expression": expression,
        "orbisctl": schedule.orbisctl_command(),
        "job": job,
    }
    files = schedule.systemd_units(**kwargs) if use_systemd else schedule.cron_entry(**kwargs)
    target = unit_dir if use_systemd else cron_dir
    if print_only:
        for name, text in files.items():
            output.console.print(f"# {escape(str(target / name))}\n{escape(text)}")
    else:
        for name, text in files.items():
            atomic_write(target / name, text.encode(), mode=0o644)
            output.info(f"wrote {escape(str(target / name))}")
        if use_systemd:
            timer = f"{schedule.unit_name(ctx.config.project_name, job)}.timer"
            for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", timer]):
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise EngineError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    when = schedule.next_run_text(expression, datetime.now().astimezone())
    output.info(f"{job.name} schedule {escape(expression)!r}: {when}")


def schedule_command(
    job: schedule.Job, expression_of: Callable[[OrbisConfig], str], summary: str
) -> Callable[..., None]:
    """The `schedule` command of a verb group: installs `job` at the schedule in orbis.yaml."""

    def command(
        directory: InstallDirOption = Path(),
        print_only: PrintOnlyOption = False,
        cron: CronOption = False,
        unit_dir: ScheduleDirOption = schedule.SYSTEMD_UNIT_DIR,
        cron_dir: CronDirOption = schedule.CRON_DIR,
    ) -> None:
        install_schedule(
            directory,
            job,
            expression_of,
            print_only=print_only,
            cron=cron,
            unit_dir=unit_dir,
            cron_dir=cron_dir,
        )

    command.__doc__ = summary
    return command
