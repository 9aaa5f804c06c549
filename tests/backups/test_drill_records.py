"""Drill reports (JSON + Markdown, history) and doctor's backup and drill age checks.

The drill itself needs Docker: tests/e2e/test_backup.py runs it on a real stack.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backups.create import create_backup
from backups.drill import (
    DrillCheck,
    DrillReport,
    history,
    last_successful,
    remove_leftovers,
    write_report,
)
from orbisctl import doctor
from orbisctl.cli import app
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import ExitCode
from orbisctl.core.install import Install
from tests.backups.conftest import Stack, make_install

NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def _report(drill_id: str, started: datetime, *, ok: bool) -> DrillReport:
    report = DrillReport(
        drill_id=drill_id,
        backup_id="20261126T030000Z-abcdef",
        backup_created_at="2026-11-26T03:00:00+00:00",
        started_at=started.isoformat(),
        finished_at=(started + timedelta(minutes=2)).isoformat(),
        rto_seconds=95.0,
        rpo_seconds=3600.0 * 27,
        rto_objective_seconds=30 * 60,
        rpo_objective_seconds=48 * 3600,
        checks=[
            DrillCheck("row counts", True, "2005 rows in 3 tables match the manifest", 1.0),
            DrillCheck("api login", ok, "restored user logged in" if ok else "401", 0.2),
            DrillCheck("call through the gateway", None, "model.provider is gemini", 0.0),
        ],
        steps={"restore data": 12.5},
    )
    report.conclude()
    return report


def test_a_report_is_written_as_json_and_markdown_and_read_back(stack: Stack) -> None:
    passed = _report("20261101T040000Z-aaaaaa", NOW - timedelta(days=26), ok=True)
    failed = _report("20261127T040000Z-bbbbbb", NOW - timedelta(hours=2), ok=False)
    assert passed.ok and not failed.ok  # a failed check fails the drill; a skipped one does not
    for report in (failed, passed):
        write_report(stack.install, report)
    drills = stack.install.repository / "drills"
    data = json.loads((drills / f"{passed.drill_id}.json").read_text())
    assert data["rto_met"] is True and data["rpo_met"] is True
    assert (drills / f"{passed.drill_id}.json").stat().st_mode & 0o777 == 0o600
    markdown = (drills / f"{failed.drill_id}.md").read_text()
    assert markdown.startswith(f"# Recovery drill {failed.drill_id}: FAILED")
    assert "| api login | FAIL | 401 |" in markdown
    assert "| call through the gateway | skipped | model.provider is gemini |" in markdown
    assert [r.drill_id for r in history(stack.install)] == [passed.drill_id, failed.drill_id]
    found = last_successful(stack.install)
    assert found is not None and found.drill_id == passed.drill_id


def test_a_missed_objective_fails_the_drill_even_when_every_check_passed() -> None:
    report = _report("20261127T040000Z-cccccc", NOW, ok=True)
    report.rpo_seconds = report.rpo_objective_seconds + 1.0
    report.conclude()
    assert not report.ok and not report.rpo_met and report.rto_met


def _checks(stack: Stack, now: datetime) -> dict[str, doctor.Check]:
    config = OrbisConfig.model_validate({"backup": {"objectives": {"rpo_hours": 24}}})
    context = doctor.DoctorContext(Install(stack.install.root, config))
    return {check.name: check for check in doctor.check_backup_age(context, now=now)}


@pytest.mark.integration
def test_doctor_warns_past_the_rpo_fails_past_twice_it_and_wants_a_recent_drill(
    stack: Stack,
) -> None:
    before = _checks(stack, NOW)
    assert before["backup age"].verdict is doctor.Verdict.WARN
    assert before["backup age"].detail == "no backup yet"
    assert before["drill age"].verdict is doctor.Verdict.WARN

    taken = create_backup(stack.install, stack.executor, stack.ring(), now=NOW)
    write_report(stack.install, _report("20261120T040000Z-dddddd", NOW, ok=True))
    fresh = _checks(stack, NOW + timedelta(hours=3))
    assert fresh["backup age"].verdict is doctor.Verdict.PASS
    assert taken.backup_id in fresh["backup age"].detail
    assert fresh["drill age"].verdict is doctor.Verdict.PASS

    assert _checks(stack, NOW + timedelta(hours=30))["backup age"].verdict is doctor.Verdict.WARN
    late = _checks(stack, NOW + timedelta(hours=49))
    assert late["backup age"].verdict is doctor.Verdict.FAIL
    assert "orbisctl backup" in late["backup age"].fix
    stale = _checks(stack, NOW + timedelta(days=doctor.DRILL_WARN_DAYS + 1))["drill age"]
    assert stale.verdict is doctor.Verdict.WARN and "drill schedule" in stale.fix


def test_plain_drill_means_drill_run_and_history_starts_empty(tmp_path: Path) -> None:
    install = make_install(tmp_path / "install")
    runner = CliRunner()
    result = runner.invoke(app, ["drill", "--dir", str(install.root)])
    assert result.exit_code == ExitCode.USAGE
    assert "there is no backup in" in result.stderr
    by_id = runner.invoke(app, ["drill", "20990101T000000Z", "--dir", str(install.root)])
    assert by_id.exit_code == ExitCode.USAGE and "no backup '20990101T000000Z'" in by_id.stderr
    listed = runner.invoke(app, ["drill", "history", "--json", "--dir", str(install.root)])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []


def test_drill_schedule_prints_a_monthly_cron_entry(tmp_path: Path) -> None:
    install = make_install(tmp_path / "install")
    result = CliRunner().invoke(
        app, ["drill", "schedule", "--cron", "--print", "--dir", str(install.root)]
    )
    assert result.exit_code == 0, result.output
    assert "orbis-drill-orbisvoice" in result.stdout
    assert "0 4 1 * * root " in result.stdout
    assert f"drill run --dir {install.root}" in result.stdout


def test_leftovers_of_dead_drills_are_removed_and_a_running_drill_is_left_alone(
    tmp_path: Path,
) -> None:
    install = make_install(tmp_path / "install")
    drills = install.repository / "drills"
    dead = subprocess.Popen(["true"])
    dead.wait()
    # What a drill writes into its scratch directory as it begins.
    started = DrillReport("20261127T050000Z-dead01", "20261127T030000Z-abcdef", "", NOW.isoformat())
    for name, pid in (("orbisvoice-drill-dead01", dead.pid), ("orbisvoice-drill-live01", None)):
        scratch = drills / f".scratch-{name}"
        scratch.mkdir(parents=True)
        (scratch / "drill.pid").write_text(str(pid or os.getpid()))
        (scratch / "report.json").write_text(json.dumps(started.as_json()))
    assert remove_leftovers(install) == ["orbisvoice-drill-dead01"]
    assert sorted(p.name for p in drills.iterdir()) == [
        ".scratch-orbisvoice-drill-live01",
        "20261127T050000Z-dead01.json",
        "20261127T050000Z-dead01.md",
    ]
    # The killed drill is in the history, failed, saying why.
    [killed] = history(install)
    assert killed.drill_id == started.drill_id and not killed.ok and killed.rto_seconds is None
    assert killed.error.startswith("killed before it finished")
    # `drill cleanup` runs the same removal alone: nothing is left to remove now.
    result = CliRunner().invoke(app, ["drill", "cleanup", "--json", "--dir", str(install.root)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"removed": []}
