"""Disk faults a user can cause (issue 15, item 13): a backup into a full or read-only
backup.location, a restore whose safety backup hits a full disk, prune on a read-only
repository. Each is one line naming the path, a hint with the fix, exit code 7, and nothing
half-written left behind. Real small tmpfs mounts (tests/filesystems.py), real servers."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from orbisctl.cli import app
from orbisctl.core.errors import ExitCode
from orbisctl.output import STEP_MARK
from tests.backups.conftest import Stack
from tests.backups.test_retention import fake_backup
from tests.filesystems import remount_read_only, tmpfs

# Random text compresses badly: the dump alone is far over a 64 KiB file system.
MORE_ROWS_SQL = """
INSERT INTO transcripts (agent_id, seq, text)
    SELECT 1, g, md5(random()::text) || md5(random()::text) FROM generate_series(1, 20000) g
"""


@pytest.fixture
def cli(cli: CliRunner, stack: Stack) -> CliRunner:
    """The backup tests' in-process CLI (conftest), on a database too big for a small disk."""
    with stack.connect() as conn:
        conn.execute(MORE_ROWS_SQL.encode())
    return cli


def _locate_backups(stack: Stack, location: Path) -> None:
    (stack.install.root / "orbis.yaml").write_text(
        f"domain: voice.example.com\nbackup:\n  location: {location}\n"
    )


def _one_line_error(result: Result) -> tuple[str, str]:
    assert "Traceback" not in result.output
    # The error is one line; the steps' progress lines (`· dump redis… failed after …`) aside.
    lines = [
        line.strip()
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(STEP_MARK)
    ]
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    return lines[0].removeprefix("error: "), lines[1].removeprefix("hint: ")


@pytest.mark.integration
def test_a_backup_into_a_full_location(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "full", size="64k") as full:
        _locate_backups(stack, full)
        result = cli.invoke(app, ["backup", "create"], catch_exceptions=False)
        assert result.exit_code == ExitCode.STORAGE
        error, hint = _one_line_error(result)
        assert error == f"cannot write the backup in {full}: No space left on device"
        assert f"df -h {full}" in hint and "backup.location" in hint
        assert list(full.iterdir()) == []  # the partial backup is gone, the space free again


@pytest.mark.integration
@pytest.mark.parametrize("below", [False, True])
def test_a_backup_into_a_read_only_location(
    cli: CliRunner, stack: Stack, tmp_path: Path, below: bool
) -> None:
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        location = read_only / "backups" if below else read_only
        _locate_backups(stack, location)
        result = cli.invoke(app, ["backup", "create"], catch_exceptions=False)
        assert result.exit_code == ExitCode.STORAGE
        error, hint = _one_line_error(result)
        assert error == f"cannot write the backup in {location}: Read-only file system"
        assert "read-only file system: remount it read-write" in hint
        assert "backup.location" in hint


@pytest.mark.integration
def test_a_restore_whose_safety_backup_hits_a_full_disk_changes_nothing(
    cli: CliRunner, stack: Stack, tmp_path: Path
) -> None:
    created = cli.invoke(app, ["backup", "create", "--json"], catch_exceptions=False)
    assert created.exit_code == 0, created.output
    backup = tmp_path / "usb" / json.loads(created.stdout)["id"]
    shutil.copytree(stack.install.repository / backup.name, backup)
    with stack.connect() as conn:  # the current data, which the safety backup must hold
        conn.execute(MORE_ROWS_SQL.encode())
    current = stack.count("transcripts")
    with tmpfs(tmp_path / "full", size="64k") as full:
        _locate_backups(stack, full)
        result = cli.invoke(app, ["restore", str(backup), "--yes"], catch_exceptions=False)
        assert result.exit_code == ExitCode.STORAGE
        error, hint = _one_line_error(result)
        assert error == (
            "cannot take the safety backup of the current data: cannot write the backup in "
            f"{full}: No space left on device; nothing was restored"
        )
        assert f"df -h {full}" in hint and "--no-safety-backup" in hint
        assert list(full.iterdir()) == []  # no partial backup, no restore lock
    assert stack.count("transcripts") == current  # the live data was never touched


def test_prune_on_a_read_only_repository(tmp_path: Path) -> None:
    """The one wrapper in cli.py turns what core code leaves unnamed into one line too."""
    root = tmp_path / "install"
    root.mkdir()
    start = datetime(2026, 1, 1, 3, tzinfo=UTC)
    with tmpfs(root / "backups", size="1m") as repository:
        ids = [fake_backup(repository, start + timedelta(days=day)) for day in range(10)]
        remount_read_only(repository)
        result = CliRunner().invoke(
            app, ["backup", "prune", "--dir", str(root)], catch_exceptions=False
        )
        assert result.exit_code == ExitCode.STORAGE
        error, hint = _one_line_error(result)
        assert error == (f"cannot delete backup {ids[0]} in {repository}: Read-only file system")
        assert "remount it read-write" in hint
