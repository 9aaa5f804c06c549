"""`orbisctl restore --to-time / --to-latest`: what is refused before anything is touched.

The restore itself needs the stack's postgres container (tests/e2e/test_archive.py); these
are the one-line refusals that come first, each leaving the install directory as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from backups import pitr
from backups.archive import parse_target_time
from orbisctl.cli import app
from orbisctl.core.errors import DataError, ExitCode, InstallDirError


def _restore(directory: Path, *args: str) -> Result:
    return CliRunner().invoke(
        app, ["restore", "--dir", str(directory), "--yes", *args], catch_exceptions=False
    )


def _one_line_error(result: Result, code: ExitCode, words: str) -> None:
    assert result.exit_code == code, result.output
    assert words in result.output, result.output
    assert "Traceback" not in result.output
    assert result.output.count("error:") == 1, result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--to-time", "2026-01-01 00:00:00", "20260101T000000Z-abcdef"],
        ["--to-time", "2026-01-01 00:00:00", "--to-latest"],
        ["--to-latest", "--with-secrets"],
        ["--to-latest", "--secrets-only"],
    ],
)
def test_to_time_and_to_latest_go_without_a_backup_and_alone(
    tmp_path: Path, args: list[str]
) -> None:
    result = _restore(tmp_path, *args)
    _one_line_error(result, ExitCode.USAGE, "--to-time and --to-latest restore the database")
    assert list(tmp_path.iterdir()) == []


def test_servers_given_by_url_are_refused(tmp_path: Path) -> None:
    result = _restore(
        tmp_path,
        "--to-latest",
        "--database-url",
        "postgresql://orbis@127.0.0.1:1/orbis",
        "--redis-url",
        "redis://127.0.0.1:1/0",
    )
    _one_line_error(result, ExitCode.USAGE, "not on servers given by URL")


def test_an_install_without_archiving_is_told_how_to_turn_it_on(tmp_path: Path) -> None:
    config = {"backup": {"archive": {"enabled": False}}}
    (tmp_path / "orbis.yaml").write_text(yaml.safe_dump(config))
    result = _restore(tmp_path, "--to-time", "2026-01-01 00:00:00")
    _one_line_error(result, ExitCode.USAGE, "needs continuous archiving")
    assert "backup.archive.enabled: true" in result.output


@pytest.mark.parametrize(
    ("text", "words"),
    [("yesterday noon", "is not a time"), ("2999-01-01 00:00:00", "is in the future")],
)
def test_a_target_that_is_no_past_time_is_refused(tmp_path: Path, text: str, words: str) -> None:
    result = _restore(tmp_path, "--to-time", text)
    _one_line_error(result, ExitCode.DATA, words)
    assert list(tmp_path.iterdir()) == []


def test_a_target_without_a_zone_is_utc_and_one_with_a_zone_keeps_it() -> None:
    assert parse_target_time("2026-03-01 12:00:00") == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_target_time("2026-03-01 14:00:00+02:00") == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_a_second_ahead_of_the_clock_is_allowed_but_not_more() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert pitr.parse_target("2026-03-01 12:00:01", now=now) == now + timedelta(seconds=1)
    with pytest.raises(DataError, match="in the future"):
        pitr.parse_target("2026-03-01 12:00:02", now=now)


def test_an_unreadable_journal_names_its_file(tmp_path: Path) -> None:
    store = pitr.PitrJournalStore(tmp_path)
    store.path.parent.mkdir()
    store.path.write_text('{"version": 99}')
    with pytest.raises(InstallDirError, match=r"pitr-journal\.json is unreadable"):
        store.load()


def test_the_journal_survives_a_round_trip(tmp_path: Path) -> None:
    store = pitr.PitrJournalStore(tmp_path)
    journal = pitr.PitrJournal(
        target="2026-03-01T12:00:00+00:00",
        started_at="2026-03-01T12:05:00Z",
        kept_as="pgdata.pre-restore-20260301120500",
        app_stopped=False,
        phase="verified",
    )
    store.save(journal)
    assert store.load() == journal
    assert store.path.stat().st_mode & 0o777 == 0o600
    store.finish()
    assert store.load() is None


def test_up_refuses_to_start_postgres_while_a_switch_is_unfinished(tmp_path: Path) -> None:
    init = CliRunner().invoke(
        app,
        ["init", "--dir", str(tmp_path), "--non-interactive", "--model", "emulator"],
        catch_exceptions=False,
    )
    assert init.exit_code == 0, init.output
    pitr.PitrJournalStore(tmp_path).save(
        pitr.PitrJournal(
            target=None,
            started_at="2026-03-01T12:05:00Z",
            kept_as="pgdata.pre-restore-20260301120500",
            app_stopped=True,
            phase="verified",
        )
    )
    result = CliRunner().invoke(app, ["up", "--dir", str(tmp_path)], catch_exceptions=False)
    _one_line_error(result, ExitCode.USAGE, "point-in-time restore to the latest archived WAL")
    assert "orbisctl restore --resume" in result.output
