"""doctor's judgement of continuous archiving, on reports of the shapes pg_stat_archiver and
`pgbackrest info` give (the real ones are read in tests/backups/test_archive.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backups.archive import ArchiverState, BackupKind, BaseBackup, RecoveryWindow, RepositoryState
from backups.archive_stack import ArchiveReport, RepositoryReport
from orbisctl import doctor
from orbisctl.core.config import BackupConfig

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=60)
CONFIG = BackupConfig()  # RPO 24 h, a 7-day window


def archiver(
    *, last: str = "000000010000000000000041", current: str = "000000010000000000000042",
    age: float = 30.0, failed_at: datetime | None = None,
) -> ArchiverState:  # fmt: skip
    return ArchiverState(
        archived_count=65,
        last_archived_wal=last,
        last_archived_at=NOW - timedelta(seconds=age),
        failed_count=0 if failed_at is None else 3,
        last_failed_wal=None if failed_at is None else "000000010000000000000042",
        last_failed_at=failed_at,
        current_wal=current,
        checked_at=NOW,
    )


def repository(
    repo: int = 1, *, status: str = "ok", newest_age: timedelta | None = timedelta(hours=2),
    window_days: float = 8.0,
) -> RepositoryReport:  # fmt: skip
    if newest_age is None:
        return RepositoryReport(RepositoryState(repo, status, (), None, None), None)
    stopped = NOW - newest_age
    backup = BaseBackup("20261206-100000F", BackupKind.FULL, stopped, stopped, "a", "b")
    window = RecoveryWindow(repo, NOW - timedelta(days=window_days), NOW)
    return RepositoryReport(RepositoryState(repo, status, (backup,), "a", "b"), window)


def judged(report: ArchiveReport, since: datetime | None = LONG_AGO) -> dict[str, doctor.Check]:
    checks = doctor.judge_archiving(report, CONFIG, now=NOW, archiving_since=since)
    return {check.name: check for check in checks}


def test_a_healthy_archive_passes_every_check() -> None:
    checks = judged(ArchiveReport(archiver(), [repository(1), repository(2)]))
    assert [c.verdict for c in checks.values()] == [doctor.Verdict.PASS] * 3
    assert list(checks) == [
        "wal archiving",
        "backup repository 1 (local)",
        "backup repository 2 (backup.remote)",
    ]
    assert checks["wal archiving"].detail == "65 segments archived, the last 30 s ago"


def test_failing_archiving_fails_naming_the_segment() -> None:
    report = ArchiveReport(archiver(failed_at=NOW - timedelta(seconds=5)), [repository()])
    check = judged(report)["wal archiving"]
    assert check.verdict is doctor.Verdict.FAIL
    assert "segment 000000010000000000000042 last failed at 2026-12-06 11:59:55 UTC" in check.detail
    assert "orbisctl logs postgres" in check.fix


@pytest.mark.parametrize(
    ("last", "current", "age", "verdict"),
    [
        # Segments completed and waiting for minutes: stuck.
        ("000000010000000000000041", "000000010000000000000045", 900, doctor.Verdict.WARN),
        # Across a log file's end (…00FF is followed by …0100000000).
        ("0000000100000000000000FE", "000000010000000100000001", 900, doctor.Verdict.WARN),
        # Waiting, but within a few archive_timeouts: the async push catches up.
        ("000000010000000000000041", "000000010000000000000045", 90, doctor.Verdict.PASS),
        # An idle server: nothing waits however old the last push.
        ("000000010000000000000041", "000000010000000000000042", 86400, doctor.Verdict.PASS),
        # Right after a point-in-time restore the last archived file is the timeline's history.
        ("00000002.history", "000000020000000000000043", 900, doctor.Verdict.PASS),
    ],
)
def test_segments_waiting_for_minutes_warn(
    last: str, current: str, age: float, verdict: doctor.Verdict
) -> None:
    report = ArchiveReport(archiver(last=last, current=current, age=age), [repository()])
    check = judged(report)["wal archiving"]
    assert check.verdict is verdict, check
    if verdict is doctor.Verdict.WARN:
        assert "completed WAL segment(s) wait" in check.detail


def test_an_unreachable_remote_fails_with_what_to_check() -> None:
    status = "[HostConnectError] unable to get address for 'objectstore': [-2] Name or service"
    checks = judged(ArchiveReport(archiver(), [repository(1), repository(2, status=status)]))
    remote = checks["backup repository 2 (backup.remote)"]
    assert (remote.verdict, remote.detail) == (doctor.Verdict.FAIL, status)
    assert "secrets/remote_*_key" in remote.fix
    assert checks["backup repository 1 (local)"].verdict is doctor.Verdict.PASS


def test_a_repository_without_a_base_backup_warns() -> None:
    empty = repository(status="no valid backups", newest_age=None)
    check = judged(ArchiveReport(archiver(), [empty]))["backup repository 1 (local)"]
    assert check.verdict is doctor.Verdict.WARN
    assert "orbisctl backup create" in check.fix


@pytest.mark.parametrize(
    ("hours", "verdict"),
    [(23, doctor.Verdict.PASS), (30, doctor.Verdict.WARN), (49, doctor.Verdict.FAIL)],
)
def test_an_old_base_backup_warns_past_the_rpo_and_fails_past_twice_it(
    hours: int, verdict: doctor.Verdict
) -> None:
    remote = repository(2, newest_age=timedelta(hours=hours))
    check = judged(ArchiveReport(archiver(), [remote]))["backup repository 2 (backup.remote)"]
    assert check.verdict is verdict, check
    assert f"is {hours:.1f} h old" in check.detail


def test_a_short_window_warns_only_once_archiving_ran_longer_than_it() -> None:
    short = ArchiveReport(archiver(), [repository(window_days=2.5)])
    check = judged(short)["backup repository 1 (local)"]
    assert check.verdict is doctor.Verdict.WARN
    assert "2.5 days, shorter than backup.archive.window_days (7)" in check.detail
    # A young install's window is still filling.
    young = judged(short, since=NOW - timedelta(days=3))["backup repository 1 (local)"]
    assert young.verdict is doctor.Verdict.PASS
    # Within a day of the window: full backups come every full_every_days.
    near = judged(ArchiveReport(archiver(), [repository(window_days=6.5)]))
    assert near["backup repository 1 (local)"].verdict is doctor.Verdict.PASS
