"""Continuous archiving with the real pgBackRest (Debian's 2.45) and a real PostgreSQL 15 on
loopback: a stanza, a base backup, WAL pushed by the server's archive_command, the window the
repository reaches, and a point-in-time restore that gets exactly the rows before the target."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backups import archive, pgbackrest_config
from backups.executor import LocalExecutor
from orbisctl import doctor
from orbisctl.core.errors import DataError, EngineError
from tests.backups.archiving import (
    archived_after,
    archiving_conf,
    as_postgres,
    configure,
    empty_dir,
    insert,
    past_the_newest_backup,
    rows_restored_to,
    server_now,
    writes_around_a_target,
)
from tests.backups.conftest import make_install
from tests.services import PostgresServer, postgres_server

CIPHER_PASS = "a-test-passphrase-of-the-local-repository"


@dataclass
class Archived:
    server: PostgresServer
    pgbackrest: archive.PgBackRest
    executor: LocalExecutor
    base: Path
    config_file: Path


@pytest.fixture(scope="module")
def archived() -> Iterator[Archived]:
    # Not under pytest's tmp dirs: those are root's alone, and pgBackRest runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="orbis-pgbackrest-"))
    as_postgres(base)
    config_file = base / "pgbackrest.conf"
    extra = archiving_conf(base)
    with postgres_server(extra_conf=extra, initdb_args=("--data-checksums",)) as server:
        pgbackrest = configure(
            base,
            server,
            [pgbackrest_config.Repository(str(base / "repo"))],
            [pgbackrest_config.RepositoryKeys(CIPHER_PASS)],
        )
        executor = LocalExecutor(server.url("postgres"), "redis://127.0.0.1:1/0")
        archive.create_stanza(pgbackrest)
        try:
            yield Archived(server, pgbackrest, executor, base, config_file)
        finally:
            server.stop()
    # After the server (and with it the async archiver) stopped: nothing recreates the spool.
    shutil.rmtree(base, ignore_errors=True)


def test_a_restore_to_a_time_between_two_writes_gets_exactly_the_rows_before_it(
    archived: Archived,
) -> None:
    archive.base_backup(archived.pgbackrest, archive.BackupKind.FULL)
    past_the_newest_backup(archived.pgbackrest, archived.server)
    target = writes_around_a_target(archived.server)
    # Switches WAL and waits until the segment holding rows 10..19 is in the repository.
    archive.check_archiving(archived.pgbackrest)

    state = archive.repository_states(archived.pgbackrest)[0]
    archiver = archived_after(archived.executor, target)
    window = archive.recovery_window(state, archiver)
    assert window is not None
    archive.check_target(target, window)
    assert archiver.last_archived_wal is not None and not archiver.failing
    assert state.ok and [b.kind for b in state.backups] == [archive.BackupKind.FULL]

    restored = empty_dir(archived.base, "restored")
    assert rows_restored_to(archived.pgbackrest, archived.server, restored, target) == list(
        range(10)
    )


def test_a_restore_to_the_latest_gets_every_archived_row(archived: Archived) -> None:
    insert(archived.server, range(100, 105))
    archive.check_archiving(archived.pgbackrest)
    restored = empty_dir(archived.base, "latest")
    rows = rows_restored_to(archived.pgbackrest, archived.server, restored, None)
    assert set(range(100, 105)) <= set(rows)


def test_a_time_outside_the_window_is_refused_naming_the_window(archived: Archived) -> None:
    archive.base_backup(archived.pgbackrest, archive.BackupKind.DIFFERENTIAL)
    state = archive.repository_states(archived.pgbackrest)[0]
    window = archive.recovery_window(state, archive.archiver_state(archived.executor))
    assert window is not None
    assert archive.BackupKind.DIFFERENTIAL in [b.kind for b in state.backups]
    before = window.earliest - timedelta(hours=1)
    with pytest.raises(DataError) as refused:
        archive.check_target(before, window)
    assert window.describe() in str(refused.value)
    with pytest.raises(DataError):
        archive.check_target(window.latest + timedelta(minutes=5), window)


def test_a_wrong_passphrase_is_refused_with_pgbackrest_s_reason(archived: Archived) -> None:
    # The same repository, another passphrase.
    wrong = configure(
        empty_dir(archived.base, "wrong"),
        archived.server,
        [pgbackrest_config.Repository(str(archived.base / "repo"))],
        [pgbackrest_config.RepositoryKeys("not-the-key")],
    )
    (state,) = archive.repository_states(wrong)
    assert not state.ok and not state.backups
    with pytest.raises(EngineError, match="pgBackRest full backup failed") as refused:
        archive.base_backup(wrong, archive.BackupKind.FULL)
    assert "not-the-key" not in str(refused.value)


def test_verify_passes_a_sound_repository_and_names_a_damaged_segment(archived: Archived) -> None:
    archive.base_backup(archived.pgbackrest, archive.BackupKind.INCREMENTAL)
    archive.verify_repository(archived.pgbackrest)
    segments = sorted((archived.base / "repo" / "archive").rglob("0000000100000000000000*"))
    damaged = segments[0]
    original = damaged.read_bytes()
    damaged.write_bytes(original[:16] + bytes(len(original) - 16))
    try:
        with pytest.raises(DataError, match="verify of repository 1 failed") as refused:
            archive.verify_repository(archived.pgbackrest)
        assert "zst error" in str(refused.value) or "invalid" in str(refused.value)
    finally:
        damaged.write_bytes(original)


def test_a_secret_spanning_lines_is_refused() -> None:
    with pytest.raises(DataError, match="spans lines"):
        pgbackrest_config.render_secret_config(
            [pgbackrest_config.RepositoryKeys("one\nrepo1-path=/elsewhere")]
        )
    assert "repo1-cipher-pass=k" in pgbackrest_config.render_secret_config(
        [pgbackrest_config.RepositoryKeys("k")]
    )


def test_a_target_time_without_a_zone_is_utc_and_garbage_is_refused() -> None:
    assert archive.parse_target_time("2026-12-04 10:00:00") == datetime(2026, 12, 4, 10, tzinfo=UTC)
    assert archive.parse_target_time("2026-12-04 12:00:00+02:00").astimezone(UTC).hour == 10
    with pytest.raises(DataError, match="not a time"):
        archive.parse_target_time("yesterday")


def test_doctor_reads_the_archiver_and_each_repository(archived: Archived, tmp_path: Path) -> None:
    install = make_install(tmp_path / "orbis")
    ctx = doctor.DoctorContext(install, database=archived.executor, pgbackrest=archived.pgbackrest)
    moment = server_now(archived.server)
    archive.check_archiving(archived.pgbackrest)
    archived_after(archived.executor, moment)
    archive.base_backup(archived.pgbackrest, archive.BackupKind.INCREMENTAL)
    archiver, local = doctor.check_archiving(ctx)
    assert (archiver.name, archiver.verdict) == ("wal archiving", doctor.Verdict.PASS)
    assert "segments archived, the last" in archiver.detail
    assert (local.name, local.verdict) == ("backup repository 1 (local)", doctor.Verdict.PASS)
    assert "newest base backup" in local.detail and "0.0 h old" in local.detail

    # A stanza in a new repository, no base backup in it yet.
    fresh = configure(
        empty_dir(archived.base, "fresh"),
        archived.server,
        [pgbackrest_config.Repository(str(archived.base / "fresh-repo"))],
        [pgbackrest_config.RepositoryKeys(CIPHER_PASS)],
    )
    archive.create_stanza(fresh)
    ctx.pgbackrest = fresh
    _, empty = doctor.check_archiving(ctx)
    assert empty.verdict is doctor.Verdict.WARN, empty
    assert empty.detail.startswith("no base backup yet")

    # The first repository read with another passphrase: pgBackRest refuses it.
    ctx.pgbackrest = configure(
        empty_dir(archived.base, "wrong-doctor"),
        archived.server,
        [pgbackrest_config.Repository(str(archived.base / "repo"))],
        [pgbackrest_config.RepositoryKeys("not-the-key")],
    )
    _, refused = doctor.check_archiving(ctx)
    assert refused.verdict is doctor.Verdict.FAIL, refused
    assert "unable to load info file" in refused.detail, refused
    assert "not-the-key" not in refused.detail + refused.fix
