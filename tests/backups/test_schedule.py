"""backup.schedule: the OnCalendar subset, next runs, and the unit and cron files."""

from __future__ import annotations

import shlex
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backups import schedule
from orbisctl.cli import app
from orbisctl.core.errors import UserError
from tests.backups.test_retention import fake_backup

NOW = datetime(2026, 11, 27, 5, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*-*-* 03:00:00", datetime(2026, 11, 28, 3, 0, tzinfo=UTC)),
        ("*-*-* 05:00:01", datetime(2026, 11, 27, 5, 0, 1, tzinfo=UTC)),
        ("*-*-* 05:00", datetime(2026, 11, 28, 5, 0, tzinfo=UTC)),  # strictly after now
        ("*-*-01 04:00:00", datetime(2026, 12, 1, 4, 0, tzinfo=UTC)),
        ("*-02-29 01:30:00", datetime(2028, 2, 29, 1, 30, tzinfo=UTC)),
        ("*-*-* *:15:00", datetime(2026, 11, 27, 5, 15, tzinfo=UTC)),
        ("daily", datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
        ("monthly", datetime(2026, 12, 1, 0, 0, tzinfo=UTC)),
        ("*-*-1,15 02:00:00", datetime(2026, 12, 1, 2, 0, tzinfo=UTC)),
    ],
)
def test_next_run(expression: str, expected: datetime) -> None:
    assert schedule.next_run(schedule.parse_calendar(expression), NOW) == expected


def test_a_date_in_the_past_never_runs() -> None:
    assert schedule.next_run(schedule.parse_calendar("2020-01-01 00:00:00"), NOW) is None


@pytest.mark.parametrize(
    "expression", ["Mon *-*-* 03:00", "*-*-* 25:00:00", "sometimes", "*-13-* 1:00"]
)
def test_unsupported_expressions_are_one_clear_error(expression: str) -> None:
    with pytest.raises(UserError, match=r"^schedule ") as info:
        schedule.parse_calendar(expression)
    assert info.value.hint


def test_cron_fields() -> None:
    calendar = schedule.parse_calendar("*-*-1,15 03:30:00")
    assert schedule.cron_fields(calendar, "x") == "30 3 1,15 * *"
    with pytest.raises(UserError, match="cron cannot express a year"):
        schedule.cron_fields(schedule.parse_calendar("2027-*-* 03:00"), "2027-*-* 03:00")


def test_systemd_units_run_create_then_prune() -> None:
    files = schedule.systemd_units(
        project="orbisvoice",
        install_root=Path("/srv/orbis"),
        expression="*-*-* 03:00:00",
        orbisctl="/opt/orbis/bin/orbisctl",
    )
    service = files["orbis-backup-orbisvoice.service"]
    timer = files["orbis-backup-orbisvoice.timer"]
    assert "ExecStart=/opt/orbis/bin/orbisctl backup create --dir /srv/orbis\n" in service
    assert service.index("backup create") < service.index("backup prune")
    assert "Type=oneshot" in service
    assert "OnCalendar=*-*-* 03:00:00\n" in timer and "Persistent=true" in timer


def test_the_drill_job_gets_its_own_units_and_cron_entry() -> None:
    units = schedule.systemd_units(
        project="shop",
        install_root=Path("/srv/orbis"),
        expression="*-*-01 04:00:00",
        orbisctl="/usr/bin/orbisctl",
        job=schedule.DRILL_JOB,
    )
    assert sorted(units) == ["orbis-drill-shop.service", "orbis-drill-shop.timer"]
    service = units["orbis-drill-shop.service"]
    assert "ExecStart=/usr/bin/orbisctl drill run --dir /srv/orbis\n" in service
    assert "OnCalendar=*-*-01 04:00:00" in units["orbis-drill-shop.timer"]
    (entry,) = schedule.cron_entry(
        project="shop",
        install_root=Path("/srv/orbis"),
        expression="*-*-01 04:00:00",
        orbisctl="/usr/bin/orbisctl",
        job=schedule.DRILL_JOB,
    ).values()
    assert "0 4 1 * * root { /usr/bin/orbisctl drill run --dir /srv/orbis; } >>" in entry


def test_the_boot_job_runs_status_once_docker_brought_the_stack_back() -> None:
    """Issue 14: a restore the reboot interrupted is finished or undone at boot."""
    units = schedule.systemd_units(
        project="shop",
        install_root=Path("/srv/orbis"),
        expression=schedule.AT_BOOT,
        orbisctl="/usr/bin/orbisctl",
        job=schedule.BOOT_JOB,
    )
    service, timer = units["orbis-boot-shop.service"], units["orbis-boot-shop.timer"]
    assert "ExecStart=/usr/bin/orbisctl status --dir /srv/orbis\n" in service
    assert "After=docker.service" in service
    assert f"OnBootSec={schedule.BOOT_DELAY_SECONDS}s\n" in timer and "OnCalendar" not in timer
    (entry,) = schedule.cron_entry(
        project="shop",
        install_root=Path("/srv/orbis"),
        expression=schedule.AT_BOOT,
        orbisctl="/usr/bin/orbisctl",
        job=schedule.BOOT_JOB,
    ).values()
    line = entry.splitlines()[-1]
    assert line.startswith(
        f"@reboot root {{ sleep {schedule.BOOT_DELAY_SECONDS} && /usr/bin/orbisctl status "
        "--dir /srv/orbis; } >>"
    )


@pytest.mark.parametrize("job", [schedule.BACKUP_JOB, schedule.DRILL_JOB, schedule.BOOT_JOB])
def test_every_scheduled_command_line_parses_with_the_real_cli(job: schedule.Job) -> None:
    service = schedule.systemd_units(
        project="shop",
        install_root=Path("/srv/orbis"),
        expression="daily",
        orbisctl="orbisctl",
        job=job,
    )[f"orbis-{job.name}-shop.service"]
    lines = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == len(job.commands)
    for line in lines:
        argv = shlex.split(line.removeprefix("ExecStart="))
        # --help after every option: exit 0 only when each option sits where it is accepted.
        result = CliRunner().invoke(app, [*argv[1:], "--help"])
        assert result.exit_code == 0, result.output


def test_the_cron_entry_logs_every_command_of_the_job(tmp_path: Path) -> None:
    """Run the cron line's command with /bin/sh, as cron does: the output of `backup create`
    (stdout and stderr) lands in the log, not only that of the last command (issue 15, 7)."""
    fake = tmp_path / "orbisctl"
    fake.write_text('#!/bin/sh\necho "out: $*"\necho "err: $*" >&2\n')
    fake.chmod(0o755)
    install = tmp_path / "install"
    (install / "backups").mkdir(parents=True)
    (entry,) = schedule.cron_entry(
        project="shop", install_root=install, expression="daily", orbisctl=str(fake)
    ).values()
    line = entry.splitlines()[-1]
    command = line.split(" root ", 1)[1]
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout == result.stderr == ""
    log = schedule.cron_log(install).read_text().splitlines()
    assert log == [
        f"out: backup create --dir {install}",
        f"err: backup create --dir {install}",
        f"out: backup prune --dir {install}",
        f"err: backup prune --dir {install}",
    ]


def test_scheduled_commands_print_their_results_into_the_log(tmp_path: Path) -> None:
    """The scheduled `backup prune` line, run by the real CLI, says what it deleted and kept
    (with `--quiet` the log of a run that deleted backups was empty)."""
    install = tmp_path / "install"
    start = datetime(2026, 1, 1, 3, tzinfo=UTC)
    ids = [fake_backup(install / "backups", start + timedelta(days=day)) for day in range(12)]
    service = schedule.systemd_units(
        project="shop", install_root=install, expression="daily", orbisctl="orbisctl"
    )["orbis-backup-shop.service"]
    prune = next(
        shlex.split(line.removeprefix("ExecStart="))
        for line in service.splitlines()
        if line.startswith("ExecStart=") and " prune " in line
    )
    result = CliRunner().invoke(app, prune[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"deleted {ids[0]}" in result.stdout
    assert "kept 8 backup(s), deleted 4" in result.stdout
