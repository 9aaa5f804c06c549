"""Scheduled backups: a systemd timer (or a cron entry where systemd is not running).

`backup.schedule` in orbis.yaml is a systemd OnCalendar expression. This module understands
the subset an operator needs for backups, so it can show the next run and write a cron line
from the same value: `daily`, `hourly`, `monthly`, and `Y-M-D HH:MM[:SS]` where each date
field is `*`, a number or a comma list, and the hour may be `*`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path

from orbisctl.core.errors import UserError

SYSTEMD_UNIT_DIR = Path("/etc/systemd/system")
CRON_DIR = Path("/etc/cron.d")
_SHORTHANDS = {
    "daily": "*-*-* 00:00:00",
    "hourly": "*-*-* *:00:00",
    "monthly": "*-*-01 00:00:00",
}
_SEARCH_DAYS = 4 * 366 + 1


@dataclass(frozen=True)
class Calendar:
    years: frozenset[int] | None  # None: every
    months: frozenset[int] | None
    days: frozenset[int] | None
    hours: frozenset[int] | None
    minute: int
    second: int

    def matches_day(self, day: date) -> bool:
        return all(
            allowed is None or value in allowed
            for allowed, value in (
                (self.years, day.year),
                (self.months, day.month),
                (self.days, day.day),
            )
        )


def _field(text: str, low: int, high: int, what: str, expression: str) -> frozenset[int] | None:
    if text == "*":
        return None
    try:
        values = frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise _unsupported(expression, f"{what} {text!r} is not *, a number or a list") from None
    if not all(low <= value <= high for value in values):
        raise _unsupported(expression, f"{what} {text!r} is out of range {low}-{high}")
    return values


def _unsupported(expression: str, problem: str) -> UserError:
    return UserError(
        f"schedule {expression!r}: {problem}",
        hint="use a form like '*-*-* 03:00:00', '*-*-01 04:00', 'daily' (docs/operations.md)",
    )


def parse_calendar(expression: str) -> Calendar:
    normalized = _SHORTHANDS.get(expression.strip().lower(), expression.strip())
    parts = normalized.split()
    if len(parts) != 2:
        raise _unsupported(expression, "expected 'Y-M-D HH:MM[:SS]'")
    date_part, time_part = parts
    date_fields = date_part.split("-")
    time_fields = time_part.split(":")
    if len(date_fields) != 3 or len(time_fields) not in (2, 3):
        raise _unsupported(expression, "expected 'Y-M-D HH:MM[:SS]'")
    year, month, day = date_fields
    hour, minute, *second = time_fields
    try:
        minute_value = int(minute)
        second_value = int(second[0]) if second else 0
    except ValueError:
        raise _unsupported(expression, "minutes and seconds must be numbers") from None
    if not (0 <= minute_value <= 59 and 0 <= second_value <= 59):
        raise _unsupported(expression, "minutes and seconds must be 0-59")
    return Calendar(
        years=_field(year, 1970, 9999, "year", expression),
        months=_field(month, 1, 12, "month", expression),
        days=_field(day, 1, 31, "day", expression),
        hours=_field(hour, 0, 23, "hour", expression),
        minute=minute_value,
        second=second_value,
    )


def next_run(calendar: Calendar, after: datetime) -> datetime | None:
    """The first time strictly after `after` that the calendar names (None: never again)."""
    hours = sorted(calendar.hours) if calendar.hours is not None else list(range(24))
    for offset in range(_SEARCH_DAYS):
        day = after.date() + timedelta(days=offset)
        if not calendar.matches_day(day):
            continue
        for hour in hours:
            candidate = datetime.combine(
                day, time(hour, calendar.minute, calendar.second), tzinfo=after.tzinfo
            )
            if candidate > after:
                return candidate
    return None


def cron_fields(calendar: Calendar, expression: str) -> str:
    """The five cron time fields for the calendar; cron has no years."""
    if calendar.years is not None:
        raise _unsupported(expression, "cron cannot express a year: use systemd, or '*' years")

    def render(values: frozenset[int] | None) -> str:
        return "*" if values is None else ",".join(str(v) for v in sorted(values))

    if calendar.second:
        raise _unsupported(expression, "cron runs on whole minutes: use seconds 00")
    return (
        f"{calendar.minute} {render(calendar.hours)} {render(calendar.days)} "
        f"{render(calendar.months)} *"
    )


def orbisctl_command() -> str:
    """The orbisctl of this installation (the unit must not depend on a login PATH)."""
    beside = Path(sys.executable).parent / "orbisctl"
    return str(beside) if beside.exists() else "orbisctl"


@dataclass(frozen=True)
class Job:
    """A scheduled orbisctl run: its unit name part, what it is, the verbs it runs in order."""

    name: str
    description: str
    commands: tuple[tuple[str, ...], ...]


# Not a calendar: once per boot, after the stack's containers came back with Docker.
AT_BOOT = "@reboot"
BOOT_DELAY_SECONDS = 60

BACKUP_JOB = Job("backup", "backup", (("backup", "create"), ("backup", "prune")))
# `status` finishes or undoes a restore that the reboot (or a crash before it) interrupted.
BOOT_JOB = Job("boot", "boot-time check", (("status",),))
DRILL_JOB = Job("drill", "recovery drill", (("drill", "run"),))
TLS_JOB = Job("tls", "certificate renewal", (("tls", "renew"),))


def unit_name(project: str, job: Job = BACKUP_JOB) -> str:
    return f"orbis-{job.name}-{project}"


def _argvs(job: Job, install_root: Path, orbisctl: str) -> list[list[str]]:
    # `--dir` belongs to each verb (the root command has no such option). No `--quiet`: the
    # log of a scheduled run keeps each command's result lines (the backup taken, what prune
    # deleted and kept), not only errors; progress bars are off anyway without a terminal.
    return [[orbisctl, *command, "--dir", str(install_root)] for command in job.commands]


def systemd_units(
    *, project: str, install_root: Path, expression: str, orbisctl: str, job: Job = BACKUP_JOB
) -> dict[str, str]:
    """`{file name: text}` of the service and timer (pure: nothing is written)."""
    if expression == AT_BOOT:
        when = f"OnBootSec={BOOT_DELAY_SECONDS}s\n"
    else:
        parse_calendar(expression)  # refuse what we cannot show a next run for
        # Persistent: a missed run (host off at the time) runs at the next boot.
        when = f"OnCalendar={expression}\nPersistent=true\n"
    name = unit_name(project, job)
    exec_lines = "".join(
        f"ExecStart={shlex.join(argv)}\n" for argv in _argvs(job, install_root, orbisctl)
    )
    service = (
        "[Unit]\n"
        f"Description=OrbisVoice {job.description} of {install_root}\n"
        "After=docker.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={install_root}\n"
        f"{exec_lines}"
    )
    timer = (
        "[Unit]\n"
        f"Description=Scheduled OrbisVoice {job.description} of {install_root}\n"
        "\n"
        "[Timer]\n"
        f"{when}"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def cron_log(install_root: Path) -> Path:
    """Where a cron entry appends the output of every command it runs."""
    return install_root / "backups" / "cron.log"


def cron_entry(
    *, project: str, install_root: Path, expression: str, orbisctl: str, job: Job = BACKUP_JOB
) -> dict[str, str]:
    argvs = _argvs(job, install_root, orbisctl)
    if expression == AT_BOOT:
        fields = AT_BOOT
        argvs.insert(0, ["sleep", str(BOOT_DELAY_SECONDS)])
    else:
        fields = cron_fields(parse_calendar(expression), expression)
    log = shlex.quote(str(cron_log(install_root)))
    command = " && ".join(shlex.join(argv) for argv in argvs)
    # The redirection applies to the whole group: `a && b >>log` would log only b's output.
    text = (
        f"# OrbisVoice {job.description} of {install_root} "
        f"(written by `orbisctl {job.name} schedule`)\n"
        f"{fields} root {{ {command}; }} >>{log} 2>&1\n"
    )
    return {unit_name(project, job): text}


def next_run_text(expression: str, now: datetime) -> str:
    """When the schedule runs next, for people."""
    if expression == AT_BOOT:
        return f"{BOOT_DELAY_SECONDS} s after every boot"
    upcoming = next_run(parse_calendar(expression), now)
    return upcoming.strftime("next run %Y-%m-%d %H:%M:%S %Z") if upcoming else "next run never"


def systemd_running() -> bool:
    # The check systemd's own sd_booted() makes.
    return Path("/run/systemd/system").is_dir()
