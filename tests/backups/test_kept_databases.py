"""Previous databases kept by restores: bounded by backup.keep_previous_databases, listed,
dropped on request, and watched by doctor. Real PostgreSQL and Redis, in-process CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backups import kept
from backups.create import create_backup
from orbisctl import doctor
from orbisctl.cli import app
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import ExitCode
from orbisctl.core.install import Install
from tests.backups.conftest import Stack

pytestmark = pytest.mark.integration


def _keep(stack: Stack, count: int) -> None:
    (stack.install.root / "orbis.yaml").write_text(
        f"domain: voice.example.com\nbackup:\n  keep_previous_databases: {count}\n"
    )


def _databases(stack: Stack) -> list[str]:
    with stack.connect("postgres") as conn:
        rows = conn.execute("SELECT datname FROM pg_database ORDER BY datname").fetchall()
    return [str(row[0]) for row in rows]


def _kept(stack: Stack) -> list[str]:
    prefix = stack.executor.database + kept.KEPT_INFIX
    return [name for name in _databases(stack) if name.startswith(prefix)]


def _restore(cli: CliRunner, backup_id: str) -> str:
    # Kept databases are named to the second: restores of a tiny database can be faster.
    time.sleep(1.05)
    result = cli.invoke(
        app, ["restore", backup_id, "--yes", "--no-safety-backup"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_repeated_restores_keep_at_most_the_configured_previous_databases(
    cli: CliRunner, stack: Stack
) -> None:
    backup_id = create_backup(stack.install, stack.executor, stack.ring()).backup_id
    live = stack.executor.database
    lookalike = f"{live}{kept.KEPT_INFIX}notes"  # not a name a restore makes: never dropped
    stack.pg.create_database(lookalike)

    _keep(stack, 2)
    for _ in range(4):
        _restore(cli, backup_id)
        assert len(_kept(stack)) <= 3  # the lookalike and at most two kept
    names = _kept(stack)
    assert len(names) == 3 and lookalike in names
    newest_two = [k.name for k in kept.list_kept(stack.executor)]
    assert len(newest_two) == 2

    _keep(stack, 1)
    out = _restore(cli, backup_id)
    (only,) = kept.list_kept(stack.executor)
    assert only.name not in newest_two  # the one this restore made
    assert f"dropped {newest_two[0]}" in out and f"dropped {newest_two[1]}" in out
    assert f"previous database kept as {only.name}" in out

    _keep(stack, 0)
    out = _restore(cli, backup_id)
    assert kept.list_kept(stack.executor) == []
    assert "previous database kept as" not in out
    assert lookalike in _databases(stack) and live in _databases(stack)
    assert stack.count("transcripts") == 2000


def test_list_kept_and_drop_kept(cli: CliRunner, stack: Stack) -> None:
    live = stack.executor.database
    older, newer = f"{live}_pre_restore_20260101030000", f"{live}_pre_restore_20260102030000"
    for name in (newer, older):
        stack.pg.create_database(name)

    listed = cli.invoke(app, ["restore", "--list-kept", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [row["name"] for row in rows] == [older, newer]  # oldest first
    assert rows[0]["kept_at"] == "2026-01-01T03:00:00+00:00"
    assert all(row["size"] > 1_000_000 for row in rows)  # pg_database_size: a few MB empty
    table = cli.invoke(app, ["restore", "--list-kept"], catch_exceptions=False)
    assert table.exit_code == 0 and older in table.stdout and "2026-01-01 03:00:00" in table.stdout

    for bogus in (live, "postgres", f"{live}_pre_restore_x"):
        refused = cli.invoke(app, ["restore", "--drop-kept", bogus, "--yes"])
        assert refused.exit_code == ExitCode.USAGE
        assert "is not a previous database kept by a restore" in refused.stderr
    assert live in _databases(stack)
    no_yes = cli.invoke(app, ["restore", "--drop-kept", older])
    assert no_yes.exit_code == ExitCode.USAGE and "--yes" in no_yes.stderr
    assert older in _databases(stack)

    dropped = cli.invoke(app, ["restore", "--drop-kept", older, "--yes"], catch_exceptions=False)
    assert dropped.exit_code == 0 and f"dropped {older}" in dropped.stdout
    assert _kept(stack) == [newer]
    every = cli.invoke(
        app, ["restore", "--drop-kept", "all", "--yes", "--json"], catch_exceptions=False
    )
    assert json.loads(every.stdout) == {"dropped": [newer]}
    assert _kept(stack) == [] and stack.count("transcripts") == 2000

    for args in (["restore"], ["restore", "some-id", "--list-kept"]):
        assert cli.invoke(app, args).exit_code == ExitCode.USAGE


def test_doctor_warns_about_the_disk_kept_databases_take(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = stack.executor.database

    def check(keep: int) -> doctor.Check:
        config = OrbisConfig.model_validate({"backup": {"keep_previous_databases": keep}})
        install = Install(stack.install.root, config)
        ctx = doctor.DoctorContext(install, database=stack.executor)
        (result,) = doctor.check_kept_databases(ctx)
        return result

    assert doctor.check_kept_databases in doctor.checks()
    assert check(1).verdict is doctor.Verdict.PASS
    stack.pg.create_database(f"{live}_pre_restore_20260101030000")
    within = check(1)
    assert within.verdict is doctor.Verdict.PASS and "1 previous database(s)" in within.detail
    stack.pg.create_database(f"{live}_pre_restore_20260102030000")
    beyond = check(1)
    assert beyond.verdict is doctor.Verdict.WARN
    assert "2 previous database(s) kept by restores take" in beyond.detail
    assert "more than backup.keep_previous_databases (1)" in beyond.detail
    assert "--drop-kept" in beyond.fix
    monkeypatch.setattr(doctor, "KEPT_WARN_BYTES", 1024)
    large = check(5)
    assert large.verdict is doctor.Verdict.WARN and "over 1.0 KiB" in large.detail


def test_doctor_skips_the_check_without_a_running_postgres(tmp_path: Path) -> None:
    ctx = doctor.DoctorContext(Install(tmp_path, OrbisConfig()))
    assert doctor.check_kept_databases(ctx) == []
