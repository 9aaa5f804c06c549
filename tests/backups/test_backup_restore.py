"""Backup and restore against real PostgreSQL and Redis servers: round trips and refusals."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path

import pytest

from backups import crypto, keys, manifest
from backups.catalog import list_backups
from backups.create import create_backup
from backups.partials import WRITER_PID_FILE, stale_partials
from backups.ports import (
    STEP_CHECK_ROWS,
    STEP_RESTORE_DATABASE,
    STEP_RESTORE_REDIS,
    STEP_STAGE_REDIS,
    STEP_START_APP,
    STEP_STOP_APP,
    STEP_SWITCH_DATABASE,
    NoAppControl,
)
from backups.restore import (
    RestoreResult,
    finish_restore,
    restore_backup,
    restore_config_only,
    restore_journals,
)
from backups.restore_lock import RESTORE_LOCK
from backups.verify import open_backup, verify_backup
from orbisctl import doctor
from orbisctl.core.config import OrbisConfig
from orbisctl.core.errors import DataError, UserError
from orbisctl.core.install import Install
from tests.backups.conftest import Stack, hold_writer_lock

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _backup(stack: Stack, **kwargs: object) -> Path:
    result = create_backup(stack.install, stack.executor, stack.ring(), **kwargs)  # type: ignore[arg-type]
    return stack.install.repository / result.backup_id


def _restore(stack: Stack, path: Path, **kwargs: object) -> RestoreResult:
    return restore_backup(
        stack.install,
        stack.executor,
        stack.ring(),
        path,
        app=NoAppControl(),
        **kwargs,  # type: ignore[arg-type]
    )


def _destroy(stack: Stack) -> None:
    with stack.connect() as conn:
        conn.execute("DELETE FROM transcripts WHERE seq > 10")
        conn.execute("INSERT INTO agents (name) VALUES ('written after the backup')")
    client = stack.redis()
    client.flushall()
    client.set("session:new", "x")
    client.close()


def test_round_trip_restores_database_and_redis(stack: Stack) -> None:
    path = _backup(stack, label="nightly")
    info = manifest.load(path / manifest.MANIFEST_FILE).manifest
    assert info.row_counts["public.transcripts"] == 2000
    assert info.schema_version == 1
    assert info.postgres_version.startswith("15")
    assert info.key_ids == [stack.ring().current_kid]
    _destroy(stack)
    assert stack.count("transcripts") == 10

    result = _restore(stack, path)

    assert stack.count("transcripts") == 2000
    assert stack.count("agents") == 5
    assert result.row_counts == info.row_counts
    assert result.previous_database is not None
    with stack.connect(result.previous_database) as conn:  # the old data is kept, not dropped
        assert conn.execute("SELECT count(*) FROM agents").fetchone() == (6,)
    client = stack.redis()
    assert client.get("session:abc") == b"live-call"
    assert 0 < client.ttl("ratelimit:1.2.3.4") <= 3600
    assert client.get("session:new") is None
    client.close()
    # The safety backup holds the state the restore replaced.
    assert result.safety_backup is not None
    safety = manifest.load(stack.install.repository / result.safety_backup / "manifest.json")
    assert safety.manifest.row_counts["public.agents"] == 6
    assert safety.manifest.label == "pre-restore"


def test_redis_component_is_a_clean_rdb(stack: Stack) -> None:
    """No diskless-replication EOF mark after the RDB: an AOF base must end at the CRC."""
    path = _backup(stack)
    verified = open_backup(path, stack.ring())
    component = verified.manifest.components["redis"]
    with (path / component.file).open("rb") as handle:
        rdb = b"".join(crypto.decrypt_stream(handle, verified.data_key, "redis"))
    assert rdb.startswith(b"REDIS00")
    assert rdb[-9] == 0xFF  # EOF opcode, then the 8-byte CRC64, then nothing


def test_backup_files_hold_no_plaintext(stack: Stack) -> None:
    path = _backup(stack)
    for name in manifest.COMPONENT_FILES.values():
        data = (path / name).read_bytes()
        assert b"hello, this is segment" not in data
        assert b"pg-secret" not in data and b"voice.example.com" not in data
    assert path.stat().st_mode & 0o777 == 0o700


def test_deep_verify_restores_into_a_throwaway_database(stack: Stack) -> None:
    path = _backup(stack)
    verified = verify_backup(path, stack.ring(), stack.executor, deep=True)
    assert verified.deep_row_counts == verified.manifest.row_counts
    assert verified.archive_entries > 3
    with stack.connect("postgres") as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    assert not [name for name in names if "_verify_" in name]


def _flip_byte(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


def _refused(stack: Stack, path: Path, match: str, **kwargs: object) -> None:
    before = stack.count("agents")
    with pytest.raises(DataError, match=match) as info:
        _restore(stack, path, **kwargs)
    assert "\n" not in info.value.message
    assert info.value.exit_code == 6
    assert stack.count("agents") == before  # nothing was touched


def test_flipped_byte_is_refused(stack: Stack) -> None:
    path = _backup(stack)
    _flip_byte(path / manifest.COMPONENT_FILES["database"], 500)
    _refused(stack, path, "database fails its SHA-256 checksum")


def test_flipped_byte_with_a_forged_checksum_fails_authentication(stack: Stack) -> None:
    """An attacker who rewrites the checksum too is caught by the manifest MAC."""
    path = _backup(stack)
    component = path / manifest.COMPONENT_FILES["database"]
    _flip_byte(component, 500)
    data = json.loads((path / "manifest.json").read_text())
    data["components"]["database"]["sha256"] = hashlib.sha256(component.read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(data))
    _refused(stack, path, "manifest.json fails authentication")


def test_chunk_failing_authentication_mid_restore_changes_nothing(stack: Stack) -> None:
    """A corrupted chunk whose checksum and MAC were re-made with the key (bit rot before the
    checksum, or a key holder's forgery) is caught while it streams into the new database."""
    with stack.connect() as conn:  # several chunks, so pg_restore has started when it fails
        conn.execute(
            "INSERT INTO transcripts (agent_id, seq, text) "
            "SELECT 1, g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
            "FROM generate_series(1, 40000) g"
        )
    path = _backup(stack)
    data_key = open_backup(path, stack.ring()).data_key
    component = path / manifest.COMPONENT_FILES["database"]
    _flip_byte(component, component.stat().st_size - 100)  # inside the last chunk
    data = json.loads((path / "manifest.json").read_text())
    data["components"]["database"]["sha256"] = hashlib.sha256(component.read_bytes()).hexdigest()
    del data["mac"]
    data["mac"] = crypto.manifest_mac(data_key, manifest.canonical(data))
    (path / "manifest.json").write_text(json.dumps(data))
    _destroy(stack)
    live_state = (stack.count("transcripts"), stack.count("agents"))

    _refused(stack, path, "database: chunk [0-9]+ failed authentication", safety_backup=False)

    assert (stack.count("transcripts"), stack.count("agents")) == live_state
    with stack.connect("postgres") as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    assert not [name for name in names if name.startswith(f"{stack.executor.database}_restore_")]


def test_tampered_row_counts_fail_authentication(stack: Stack) -> None:
    path = _backup(stack)
    data = json.loads((path / "manifest.json").read_text())
    data["row_counts"]["public.agents"] = 4
    (path / "manifest.json").write_text(json.dumps(data))
    _refused(stack, path, "tampered")


def test_truncated_archive_is_refused(stack: Stack) -> None:
    path = _backup(stack)
    component = path / manifest.COMPONENT_FILES["database"]
    data = component.read_bytes()
    component.write_bytes(data[: len(data) // 2])
    _refused(stack, path, "database is truncated")


def test_missing_component_is_refused(stack: Stack) -> None:
    path = _backup(stack)
    (path / manifest.COMPONENT_FILES["redis"]).unlink()
    _refused(stack, path, "component redis is missing")


def test_wrong_key_is_refused(stack: Stack) -> None:
    path = _backup(stack)
    key_file = stack.install.secrets_dir / keys.BACKUP_KEY_FILE
    key_file.write_text(crypto.b64e(os.urandom(32)))
    _refused(stack, path, "it was made with bk-.*this host has bk-", safety_backup=False)


def test_newer_format_version_is_refused(stack: Stack) -> None:
    path = _backup(stack)
    data = json.loads((path / "manifest.json").read_text())
    data["format_version"] = manifest.FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(data))
    _refused(stack, path, "format version 2, newer than this orbisctl reads")


def test_newer_schema_is_refused(stack: Stack) -> None:
    with stack.connect() as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'x', 'y')"
        )
    path = _backup(stack)
    _refused(stack, path, "schema \\(version 99\\) is newer than this code knows")


def test_old_backups_restore_after_key_rotation(stack: Stack) -> None:
    path = _backup(stack)
    old_key = stack.ring().current
    assert old_key is not None
    keys.add_to_ring(stack.install.secrets_dir, old_key)
    (stack.install.secrets_dir / keys.BACKUP_KEY_FILE).write_text(crypto.b64e(os.urandom(32)))
    newer = _backup(stack)
    assert manifest.load(newer / "manifest.json").manifest.key_ids != [crypto.key_id(old_key)]
    _destroy(stack)
    _restore(stack, path)
    assert stack.count("transcripts") == 2000


def test_passphrase_restore_on_a_new_host(stack: Stack, tmp_path: Path) -> None:
    """The old host is lost: a new install dir without secrets/, only the backup directory."""
    keys.save_escrow(stack.install.secrets_dir, "correct horse battery staple")
    path = _backup(stack)
    new_root = tmp_path / "new-host"
    new_root.mkdir()
    copied = new_root / "carried" / path.name
    shutil.copytree(path, copied)
    new_install = Install(new_root, OrbisConfig())
    _destroy(stack)

    with pytest.raises(DataError, match="wrong"):
        restore_backup(
            new_install,
            stack.executor,
            keys.load_key_ring(new_install.secrets_dir),
            copied,
            app=NoAppControl(),
            passphrase="wrong passphrase!",
        )
    assert stack.count("transcripts") == 10
    with pytest.raises(DataError, match="this host has no backup key"):
        restore_backup(
            new_install,
            stack.executor,
            keys.load_key_ring(new_install.secrets_dir),
            copied,
            app=NoAppControl(),
        )

    result = restore_backup(
        new_install,
        stack.executor,
        keys.load_key_ring(new_install.secrets_dir),
        copied,
        app=NoAppControl(),
        passphrase="correct horse battery staple",
        with_secrets=True,
        safety_backup=False,
    )
    assert result.restored_config
    assert stack.count("transcripts") == 2000
    restored_key = (new_root / "secrets" / keys.BACKUP_KEY_FILE).read_text()
    assert restored_key == (stack.install.secrets_dir / keys.BACKUP_KEY_FILE).read_text()
    restored_secret = (new_root / "secrets" / "postgres_password").stat()
    assert restored_secret.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert restored_secret.st_uid == 10001  # the container uid it had on the old host
    assert (new_root / "orbis.yaml").read_text() == "domain: voice.example.com\n"
    assert (new_root / "tls" / "server.crt").exists()


def test_backup_while_writes_are_in_progress_is_consistent(stack: Stack) -> None:
    """Each write transaction touches two tables; a consistent dump has them in step."""
    with stack.connect() as conn:
        conn.execute("CREATE TABLE calls (id bigserial PRIMARY KEY, n int)")
        conn.execute("CREATE TABLE call_events (id bigserial PRIMARY KEY, n int)")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        deadline = time.monotonic() + 30
        with stack.connect() as conn:
            conn.autocommit = False
            while not stop.is_set() and time.monotonic() < deadline and written[0] < 100_000:
                conn.execute("INSERT INTO calls (n) VALUES (%s)", (written[0],))
                conn.execute("INSERT INTO call_events (n) VALUES (%s)", (written[0],))
                conn.commit()
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 50:
            time.sleep(0.01)
        path = _backup(stack)
        during = written[0]
    finally:
        stop.set()
        thread.join()
    counts = manifest.load(path / "manifest.json").manifest.row_counts
    assert counts["public.calls"] == counts["public.call_events"]
    assert 50 <= counts["public.calls"] <= during
    assert written[0] > counts["public.calls"]  # writes really went on around the backup
    verified = verify_backup(path, stack.ring(), stack.executor, deep=True)
    assert verified.deep_row_counts == counts


def _run_killed(stack: Stack, verb: str, step: str, *extra: str) -> None:
    env = {
        **os.environ,
        "ORBIS_BACKUP_DATABASE_URL": stack.executor.database_url,
        "ORBIS_BACKUP_REDIS_URL": stack.executor.redis_url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "tests.backups.killer", verb, str(stack.install.root), step, *extra],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -9, result.stderr


def _state(stack: Stack) -> tuple[int, int, bytes | None, bytes | None]:
    client = stack.redis()
    try:
        return (
            stack.count("transcripts"),
            stack.count("agents"),
            client.get("session:abc"),
            client.get("session:new"),
        )
    finally:
        client.close()


class CallsAppControl:
    """An AppControl that notes what it was asked to do, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self) -> None:
        self.calls.append("stop")

    def start(self, restored: Collection[Path] = ()) -> None:
        self.calls.append("start")


# Every step of a restore, with the way the next command must take after a kill there: back
# to the previous state until the database switch committed, forward to the restored after.
KILLS = [
    (STEP_RESTORE_DATABASE, "undone"),
    (STEP_CHECK_ROWS, "undone"),
    (STEP_STAGE_REDIS, "undone"),
    (STEP_STOP_APP, "undone"),
    (STEP_SWITCH_DATABASE, "undone"),
    (STEP_RESTORE_REDIS, "finished"),
    (STEP_START_APP, "finished"),
]


@pytest.mark.parametrize(("step", "outcome"), KILLS, ids=[step for step, _ in KILLS])
def test_a_killed_restore_is_finished_or_undone_whole(
    stack: Stack, step: str, outcome: str
) -> None:
    with stack.connect() as conn:  # several 1 MiB chunks, so pg_restore dies mid-stream
        conn.execute(
            "INSERT INTO transcripts (agent_id, seq, text) "
            "SELECT 1, g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) "
            "FROM generate_series(1, 40000) g"
        )
    path = _backup(stack)
    restored_state = _state(stack)
    _destroy(stack)
    previous_state = _state(stack)
    assert previous_state != restored_state

    _run_killed(stack, "restore", step, str(path))

    journals = restore_journals(stack.install)
    assert journals.load() is not None
    with pytest.raises(UserError, match="is unfinished"):
        _restore(stack, path)  # a new restore does not start over an unfinished one
    app = CallsAppControl()
    finished = finish_restore(stack.install, stack.executor, app)

    assert finished is not None
    assert finished.outcome == outcome
    # Started at the end; stopped first wherever the killed restore may have been stopping
    # (the engine ends a stop after its client died).
    stopping = KILLS.index((step, outcome)) >= KILLS.index((STEP_STOP_APP, "undone"))
    assert app.calls == (["stop", "start"] if stopping else ["start"])
    assert _state(stack) == (restored_state if outcome == "finished" else previous_state)
    assert journals.load() is None
    assert not journals.staging.exists()
    scratch = f"{stack.executor.database}_restore_"
    assert not [name for name in _database_names(stack) if name.startswith(scratch)]
    assert finish_restore(stack.install, stack.executor, NoAppControl()) is None
    # And the install restores as ever.
    _restore(stack, path)
    assert _state(stack) == restored_state


def test_abort_refuses_once_the_database_was_switched(stack: Stack) -> None:
    path = _backup(stack)
    restored_state = _state(stack)
    _destroy(stack)
    _run_killed(stack, "restore", STEP_RESTORE_REDIS, str(path))

    with pytest.raises(UserError, match="already switched the database"):
        finish_restore(stack.install, stack.executor, NoAppControl(), abort=True)
    finished = finish_restore(stack.install, stack.executor, NoAppControl())

    assert finished is not None and finished.outcome == "finished"
    assert _state(stack) == restored_state


def test_abort_undoes_a_restore_killed_before_the_switch(stack: Stack) -> None:
    path = _backup(stack)
    _destroy(stack)
    previous_state = _state(stack)
    _run_killed(stack, "restore", STEP_STOP_APP, str(path))
    (unfinished,) = doctor.check_unfinished_restore(doctor.DoctorContext(stack.install))
    assert unfinished.verdict is doctor.Verdict.FAIL
    assert "was interrupted (at or before its database switch)" in unfinished.detail
    assert "--resume" in unfinished.fix

    finished = finish_restore(stack.install, stack.executor, NoAppControl(), abort=True)

    assert finished is not None and finished.outcome == "undone"
    assert _state(stack) == previous_state
    assert doctor.check_unfinished_restore(doctor.DoctorContext(stack.install)) == []


def test_backups_leave_a_restores_staged_data_out(stack: Stack) -> None:
    path = _backup(stack)
    _run_killed(stack, "restore", STEP_STOP_APP, str(path))
    assert (restore_journals(stack.install).staging / "dump.rdb").is_file()

    again = _backup(stack)

    verified = open_backup(again, stack.ring())
    component = verified.manifest.components["config"]
    with (again / component.file).open("rb") as handle:
        bundle = b"".join(crypto.decrypt_stream(handle, verified.data_key, "config"))
    assert b".restore-staged" not in bundle
    assert b"secrets/" in bundle


def test_interrupted_backup_leaves_nothing_that_looks_complete(stack: Stack) -> None:
    _run_killed(stack, "backup", "dump redis")
    assert list_backups(stack.install.repository) == []
    partials = list(stack.install.repository.glob(".partial-*"))
    assert len(partials) == 1
    assert not (partials[0] / "manifest.json").exists()


def test_open_backup_without_executor_checks_every_chunk(stack: Stack) -> None:
    path = _backup(stack)
    assert open_backup(path, stack.ring()).opened_with.startswith("key bk-")


def _database_names(stack: Stack) -> set[str]:
    with stack.connect("postgres") as conn:
        return {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database")}


def test_a_wrong_passphrase_is_refused_even_with_the_host_key(stack: Stack) -> None:
    """The host's key opens the backup, but a passphrase given is checked all the same."""
    keys.save_escrow(stack.install.secrets_dir, "correct horse battery staple")
    path = _backup(stack)
    _destroy(stack)
    databases, backups = _database_names(stack), list_backups(stack.install.repository)

    for attempt in (
        lambda: open_backup(path, stack.ring(), passphrase="wrong passphrase!"),
        lambda: verify_backup(path, stack.ring(), stack.executor, passphrase="wrong one!"),
        lambda: _restore(stack, path, passphrase="wrong passphrase!"),
        lambda: restore_config_only(stack.install, stack.ring(), path, passphrase="nope"),
    ):
        with pytest.raises(DataError, match="the passphrase is wrong"):
            attempt()

    # Nothing changed: the data, Redis, the databases, the repository (no safety backup).
    assert stack.count("transcripts") == 10
    client = stack.redis()
    assert client.get("session:new") == b"x"
    client.close()
    assert _database_names(stack) == databases
    assert list_backups(stack.install.repository) == backups
    assert not (stack.install.repository / RESTORE_LOCK).exists()
    # The right passphrase opens it, and says that is what opened it.
    opened = open_backup(path, stack.ring(), passphrase="correct horse battery staple")
    assert opened.opened_with == "passphrase"


def test_a_passphrase_for_a_backup_without_escrow_is_refused(stack: Stack) -> None:
    path = _backup(stack)  # no escrow set: the passphrase cannot be checked
    with pytest.raises(DataError, match="no passphrase escrow"):
        open_backup(path, stack.ring(), passphrase="any passphrase at all")


def test_the_next_backup_sweeps_interrupted_partials_but_not_one_being_written(
    stack: Stack,
) -> None:
    _run_killed(stack, "backup", "dump redis")
    (dead,) = stack.install.repository.glob(".partial-*")
    assert (dead / WRITER_PID_FILE).exists()  # its writer died holding it
    writing = stack.install.repository / ".partial-20990101T000000Z-abcdef"
    writing.mkdir()
    writer = hold_writer_lock(writing)  # a backup in progress in another process
    try:
        path = _backup(stack)
        assert not dead.exists()
        assert writing.is_dir()  # never taken for a leftover while its writer lives
        assert stale_partials(stack.install.repository) == []
    finally:
        os.close(writer)
    assert [e.path for e in list_backups(stack.install.repository)] == [path]
    # Once its writer is gone, the next backup takes that one too.
    _backup(stack)
    assert not writing.exists()
    assert list(stack.install.repository.glob(".partial-*")) == []
