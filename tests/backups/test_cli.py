"""The `orbisctl backup` and `orbisctl restore` commands, in-process, on real servers."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backups import manifest
from orbisctl.cli import app
from orbisctl.output import STEP_MARK
from tests.backups.conftest import Stack
from tests.backups.test_retention import fake_backup


def _json(cli: CliRunner, *args: str) -> object:
    result = cli.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.integration
def test_backup_list_verify_restore(cli: CliRunner, stack: Stack) -> None:
    created = _json(cli, "backup", "create", "--json", "--label", "before upgrade")
    assert isinstance(created, dict)
    listed = _json(cli, "backup", "list", "--json")
    assert isinstance(listed, list)
    assert [entry["id"] for entry in listed] == [created["id"]]
    assert listed[0]["label"] == "before upgrade"
    table = cli.invoke(app, ["backup", "list"], catch_exceptions=False)
    assert created["id"] in table.stdout
    assert "before" in table.stdout and "upgrade" in table.stdout  # 80 columns: it wraps
    verified = _json(cli, "backup", "verify", "--deep", "--json")
    assert isinstance(verified, dict)
    assert verified["deep_row_counts"] == created["row_counts"]

    with stack.connect() as conn:
        conn.execute("DELETE FROM transcripts")
    result = cli.invoke(app, ["restore", created["id"], "--yes"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "restored" in result.stdout and "previous database kept as" in result.stdout
    assert stack.count("transcripts") == 2000


@pytest.mark.integration
def test_plain_backup_takes_one(cli: CliRunner, stack: Stack) -> None:
    result = cli.invoke(app, ["backup"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len([p for p in stack.install.repository.iterdir() if not p.name.startswith(".")]) == 1
    misplaced = cli.invoke(app, ["backup", "--dir", str(stack.install.root), "list"])
    assert misplaced.exit_code == 2 and "put them after it" in misplaced.stderr


@pytest.mark.integration
def test_corrupt_backup_is_one_line_and_exit_6(cli: CliRunner, stack: Stack) -> None:
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    dump = stack.install.repository / created["id"] / manifest.COMPONENT_FILES["database"]
    data = bytearray(dump.read_bytes())
    data[-3] ^= 0xFF
    dump.write_bytes(bytes(data))
    result = cli.invoke(app, ["restore", created["id"], "--yes"], catch_exceptions=False)
    assert result.exit_code == 6
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith(STEP_MARK)]
    assert lines[0].startswith("error: backup ") and "checksum" in lines[0]
    assert lines[1].strip().startswith("hint:")
    assert "Traceback" not in result.output
    verify = cli.invoke(app, ["backup", "verify", created["id"]], catch_exceptions=False)
    assert verify.exit_code == 6


@pytest.mark.integration
def test_restore_needs_confirmation(cli: CliRunner, stack: Stack) -> None:
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    result = cli.invoke(app, ["restore", created["id"]], catch_exceptions=False)
    assert result.exit_code == 2
    assert "--yes" in result.stderr


@pytest.mark.integration
def test_escrow_then_passphrase_verify(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a long escrow passphrase\n")
    result = cli.invoke(app, ["backup", "escrow", "--passphrase-file", str(passphrase)])
    assert result.exit_code == 0, result.output
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    (stack.install.secrets_dir / "backup_key").unlink()  # the key is lost
    refused = cli.invoke(app, ["backup", "verify", created["id"]])
    assert refused.exit_code == 6 and "--passphrase-file" in refused.stderr
    opened = _json(
        cli, "backup", "verify", created["id"], "--json", "--passphrase-file", str(passphrase)
    )
    assert isinstance(opened, dict)
    assert opened["opened_with"] == "passphrase"


def test_prune_dry_run_and_schedule_print(cli: CliRunner, stack: Stack) -> None:
    result = cli.invoke(app, ["backup", "prune", "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0 and "kept 0 backup(s)" in result.stdout
    result = cli.invoke(app, ["backup", "schedule", "--print", "--cron"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 3 * * * root " in result.stdout
    assert f"backup create --dir {stack.install.root}" in result.stdout
    assert "next run 20" in result.stdout
    assert not list(Path("/etc/cron.d").glob("orbis-backup-*"))


@pytest.mark.integration
def test_new_host_secrets_first_then_data(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    """The runbook's new-host order: secrets from the escrow, (stack up), then the data."""
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("a long escrow passphrase\n")
    assert (
        cli.invoke(app, ["backup", "escrow", "--passphrase-file", str(passphrase)]).exit_code == 0
    )
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    carried = tmp_path / "usb" / created["id"]
    shutil.copytree(stack.install.repository / created["id"], carried)
    new_host = tmp_path / "new-host"
    new_host.mkdir()
    with stack.connect() as conn:
        conn.execute("DELETE FROM transcripts")

    result = cli.invoke(
        app,
        [
            "restore",
            str(carried),
            "--secrets-only",
            "--yes",
            "--dir",
            str(new_host),
            "--passphrase-file",
            str(passphrase),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert (new_host / "orbis.yaml").read_text() == "domain: voice.example.com\n"
    assert stack.count("transcripts") == 0  # no database was touched

    result = cli.invoke(
        app, ["restore", str(carried), "--yes", "--dir", str(new_host)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output  # opened with the restored backup key
    assert stack.count("transcripts") == 2000


def test_schedule_writes_a_cron_entry(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    cron_dir = tmp_path / "cron.d"
    result = cli.invoke(
        app, ["backup", "schedule", "--cron", "--cron-dir", str(cron_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (entry,) = cron_dir.iterdir()
    assert entry.name == "orbis-backup-orbisvoice"
    assert entry.stat().st_mode & 0o777 == 0o644
    line = entry.read_text().splitlines()[-1]
    assert line.startswith("0 3 * * * root ") and line.endswith(" 2>&1")
    assert "backup create" in line and "backup prune" in line


def test_on_boot_installs_the_boot_time_check(cli: CliRunner, stack: Stack, tmp_path: Path) -> None:
    cron_dir = tmp_path / "cron.d"
    result = cli.invoke(
        app, ["backup", "on-boot", "--cron", "--cron-dir", str(cron_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "60 s after every boot" in result.stdout
    (entry,) = cron_dir.iterdir()
    assert entry.name == "orbis-boot-orbisvoice"
    assert entry.read_text().splitlines()[-1].startswith("@reboot root { sleep 60 && ")


@pytest.mark.integration
def test_verify_a_copied_backup_without_any_stack(
    cli: CliRunner, stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    monkeypatch.delenv("ORBIS_BACKUP_DATABASE_URL")
    monkeypatch.delenv("ORBIS_BACKUP_REDIS_URL")
    result = cli.invoke(app, ["backup", "verify", created["id"]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "dump not listed (no stack here)" in result.stdout
    deep = cli.invoke(app, ["backup", "verify", created["id"], "--deep"])
    assert deep.exit_code == 3 and "compose.yaml does not exist" in deep.stderr


@pytest.mark.parametrize("verb", [["restore", "--yes"], ["backup", "verify"]])
def test_a_missing_backup_path_says_the_path_does_not_exist(
    tmp_path: Path, verb: list[str]
) -> None:
    """Not "no backup … in backups/": the operator gave a path (issue 15, item 9)."""
    root = tmp_path / "install"
    root.mkdir()
    missing = tmp_path / "missing" / "path"
    result = CliRunner().invoke(
        app, [*verb, str(missing), "--dir", str(root)], catch_exceptions=False
    )
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == f"error: {missing} does not exist"
    assert "backup list" in lines[1]
    not_a_backup = tmp_path / "not-a-backup"
    not_a_backup.mkdir()
    result = CliRunner().invoke(
        app, [*verb, str(not_a_backup), "--dir", str(root)], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        f"error: {not_a_backup} is not a backup: it has no manifest.json"
    )


def test_backup_list_never_cuts_an_id_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    """Piped or logged (CliRunner is no terminal, 80 columns), a table wider than the page is
    printed whole: a script reading ids gets every character (issue 15, item 9)."""
    root = tmp_path / "install"
    root.mkdir()
    label = "before-the-upgrade-to-release-2.0-of-every-tenant-at-/srv/orbis"
    ids = [
        fake_backup(root / "backups", datetime(2026, 1, day, 3, tzinfo=UTC), label)
        for day in (1, 2)
    ]
    result = CliRunner().invoke(app, ["backup", "list", "--dir", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ 2026")]
    assert [row.split()[1] for row in rows] == ids
    assert all(label in row for row in rows)


@pytest.mark.integration
def test_a_wrong_passphrase_file_is_one_line_even_with_the_host_key(
    cli: CliRunner, stack: Stack, tmp_path: Path
) -> None:
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("a long escrow passphrase\n")
    wrong.write_text("not the escrow passphrase\n")
    assert cli.invoke(app, ["backup", "escrow", "--passphrase-file", str(right)]).exit_code == 0
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    with stack.connect() as conn:
        conn.execute("DELETE FROM transcripts")
    for args in (
        ["backup", "verify", created["id"]],
        ["restore", created["id"], "--yes"],
        ["restore", created["id"], "--yes", "--secrets-only"],
    ):
        result = cli.invoke(app, [*args, "--passphrase-file", str(wrong)])
        assert result.exit_code == 6, result.output
        lines = [
            line.strip()
            for line in result.stderr.splitlines()
            if line.strip() and not line.startswith(STEP_MARK)  # the steps' progress lines
        ]
        assert lines == [
            f"error: backup {created['id']}: the passphrase is wrong",
            "hint: check the passphrase and try again",
        ]
    assert stack.count("transcripts") == 0  # nothing was restored
    assert [e["id"] for e in _json(cli, "backup", "list", "--json")] == [created["id"]]  # type: ignore[index]


@pytest.mark.integration
def test_backup_list_never_shows_a_partial_backup(cli: CliRunner, stack: Stack) -> None:
    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    partial = stack.install.repository / f".partial-{created['id']}"
    partial.mkdir()  # as a killed backup leaves it
    (partial / "database.dump.enc").write_bytes(b"half")
    listed = _json(cli, "backup", "list", "--json")
    assert [e["id"] for e in listed] == [created["id"]]  # type: ignore[index, union-attr]
    table = cli.invoke(app, ["backup", "list"], catch_exceptions=False)
    assert ".partial" not in table.stdout


def _restore_killed_after_its_switch(cli: CliRunner, stack: Stack) -> dict[str, object]:
    """Back up, delete the transcripts, and SIGKILL a restore of the backup once its
    database switch committed: the restore can only be finished. Returns the backup."""
    from backups.ports import STEP_RESTORE_REDIS
    from tests.backups.test_backup_restore import _run_killed

    created = _json(cli, "backup", "create", "--json")
    assert isinstance(created, dict)
    with stack.connect() as conn:
        conn.execute("DELETE FROM transcripts")
    _run_killed(stack, "restore", STEP_RESTORE_REDIS, str(stack.install.repository / created["id"]))
    return created


@pytest.mark.integration
def test_an_interrupted_restore_is_named_and_finished_by_resume(
    cli: CliRunner, stack: Stack
) -> None:
    created = _restore_killed_after_its_switch(cli, stack)

    again = cli.invoke(app, ["restore", str(created["id"]), "--yes"])
    assert again.exit_code != 0
    assert "is unfinished" in again.stderr and "--resume" in again.stderr
    both = cli.invoke(app, ["restore", "--resume", "--abort"])
    assert both.exit_code != 0 and "go alone" in both.stderr
    aborted = cli.invoke(app, ["restore", "--abort"])
    assert aborted.exit_code != 0 and "already switched the database" in aborted.stderr
    assert "Traceback" not in aborted.output

    resumed = cli.invoke(app, ["restore", "--resume"], catch_exceptions=False)

    assert resumed.exit_code == 0, resumed.output
    assert "finished the interrupted restore" in resumed.stdout
    assert stack.count("transcripts") == 2000
    nothing = cli.invoke(app, ["restore", "--resume"], catch_exceptions=False)
    assert nothing.exit_code == 0 and "no unfinished restore" in nothing.stdout


@pytest.mark.integration
def test_the_next_backup_finishes_an_interrupted_restore_first(
    cli: CliRunner, stack: Stack
) -> None:
    """A scheduled backup is the next command on an unattended host: it converges the
    install first, and backs up the state that then serves."""
    from backups.restore import restore_journals

    _restore_killed_after_its_switch(cli, stack)

    backup = cli.invoke(app, ["backup", "create", "--json"], catch_exceptions=False)

    assert backup.exit_code == 0, backup.output
    assert "finished the interrupted restore" in backup.stderr
    assert json.loads(backup.stdout)["row_counts"]["public.transcripts"] == 2000
    assert stack.count("transcripts") == 2000
    assert restore_journals(stack.install).load() is None
