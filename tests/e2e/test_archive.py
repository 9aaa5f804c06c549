"""Continuous archiving and point-in-time restore on a real stack (its own compose project).

The tests share the stack and run in file order: `backup create` takes a full and then a
differential base backup and `backup status` shows the window; a time outside it is refused;
a restore to a moment between two pairs of sign-ups keeps exactly the first pair; a restore
to the latest archived WAL keeps the newest sign-up; restores killed before and in their switch
are undone and finished; a corrupt archived segment fails verify and the restore; with
`backup.remote` (SeaweedFS in a container of the test's own) every segment and base backup
reaches the bucket too, an outage of the store loses no segment, and a restore reads the
bucket alone. Durations go to test-artifacts/e2e-archive-timings.json.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from backups import pitr
from orbisctl.core.errors import ExitCode
from orbisctl.output import STEP_MARK
from tests.e2e.conftest import ARTIFACTS, Stack
from tests.e2e.support import login_status, psql, signup
from tests.objectstore import s3_container

pytestmark = pytest.mark.docker

TIMINGS: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _timings() -> Iterator[None]:
    yield
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "e2e-archive-timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")


def _cli_json(name: str, stack: Stack, *args: str) -> Any:
    started = time.monotonic()
    result = stack.cli(*args, "--json")
    TIMINGS[name] = round(time.monotonic() - started, 1)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _server_now(stack: Stack) -> datetime:
    return datetime.fromtimestamp(float(psql(stack, "SELECT extract(epoch FROM now())")), UTC)


def _users(stack: Stack) -> int:
    return int(psql(stack, "SELECT count(*) FROM users"))


def _data_directories(stack: Stack) -> list[str]:
    (container,) = stack.containers("postgres")
    code, listing = container.exec_run(["ls", pitr.VOLUME_ROOT])
    assert code == 0, listing
    return sorted(listing.decode().split())


def _email(name: str) -> str:
    return f"{name}-{time.time_ns()}@example.com"


def test_backup_create_takes_a_full_then_a_differential_and_status_shows_the_window(
    stack: Stack,
) -> None:
    first = _cli_json("backup_create_full_seconds", stack, "backup", "create")
    second = _cli_json("backup_create_differential_seconds", stack, "backup", "create")
    assert first["base_backup"]["type"] == "full", first
    assert second["base_backup"]["type"] == "diff", second

    status = _cli_json("backup_status_seconds", stack, "backup", "status")
    archiver = status["archiver"]
    assert archiver["failing"] is False, archiver
    assert archiver["archived_count"] >= 1, archiver
    (local,) = status["repositories"]
    assert local["status"] == "ok", local
    assert [b["type"] for b in local["backups"]] == ["full", "diff"], local
    assert local["last_base_backup"]["label"] == second["base_backup"]["label"], local
    window = local["window"]
    assert window is not None, local
    earliest, latest = (datetime.fromisoformat(window[k]) for k in ("earliest", "latest"))
    assert earliest < latest <= _server_now(stack) + timedelta(seconds=1), window


def test_a_time_outside_the_window_is_refused_and_nothing_changes(stack: Stack) -> None:
    users, directories = _users(stack), _data_directories(stack)
    result = stack.cli("restore", "--to-time", "2020-01-01 00:00:00", "--yes")
    assert result.exit_code == ExitCode.DATA, result.output
    assert "outside the recoverable window of repository 1" in result.output, result.output
    assert "Traceback" not in result.output
    assert _users(stack) == users
    assert _data_directories(stack) == directories
    assert not pitr.PitrJournalStore(stack.root).path.exists()


def _wait_inside_the_window(stack: Stack, repo: int = 1) -> None:
    """Until the server's clock is past repository `repo`'s window start (a second after its
    oldest base backup stopped: pgBackRest keeps whole seconds)."""
    status = _cli_json("backup_status_seconds", stack, "backup", "status")
    earliest = datetime.fromisoformat(status["repositories"][repo - 1]["window"]["earliest"])
    deadline = time.monotonic() + 10
    while _server_now(stack) <= earliest:
        assert time.monotonic() < deadline, "the server's clock does not reach the window"
        time.sleep(0.2)


async def test_restore_to_a_time_between_writes_keeps_exactly_those_before_it(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    _wait_inside_the_window(stack)
    before = [_email("before"), _email("before")]
    for email in before:
        await signup(http, stack, email)
    # Read in its own statement, after the commits before it and before those after it.
    target = _server_now(stack)
    users_at_target = _users(stack)
    after = [_email("after"), _email("after")]
    for email in after:
        await signup(http, stack, email)
    assert _users(stack) == users_at_target + len(after)

    restored = _cli_json(
        "restore_to_time_seconds",
        stack,
        "restore",
        "--to-time",
        target.isoformat(),
        "--yes",
    )
    TIMINGS["restore_to_time_switch_seconds"] = restored["switch_seconds"]

    assert _users(stack) == users_at_target
    for email in before:
        assert await login_status(http, stack, email) == 200, email
    for email in after:
        assert await login_status(http, stack, email) == 401, email
    assert restored["row_counts"]["public.users"] == users_at_target, restored
    assert restored["safety_backup"], restored
    assert restored["full_backup"], restored
    # The switch stops api and gateway only for the renames and the restart.
    assert 0 < restored["switch_seconds"] < TIMINGS["restore_to_time_seconds"], restored
    assert _data_directories(stack) == sorted(["pgdata", restored["kept_as"]])
    assert not pitr.PitrJournalStore(stack.root).path.exists()

    status = _cli_json("backup_status_seconds", stack, "backup", "status")
    (local,) = status["repositories"]
    assert local["last_base_backup"]["label"] == restored["full_backup"], local
    assert local["last_base_backup"]["type"] == "full", local


async def test_restore_to_latest_keeps_the_newest_write(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    newest = _email("newest")
    await signup(http, stack, newest)
    users = _users(stack)

    restored = _cli_json("restore_to_latest_seconds", stack, "restore", "--to-latest", "--yes")
    TIMINGS["restore_to_latest_downtime_seconds"] = restored["switch_seconds"]

    assert _users(stack) == users
    assert await login_status(http, stack, newest) == 200
    # api and gateway stop before the WAL is sealed: the downtime is the whole restore.
    assert restored["switch_seconds"] > 0, restored
    # backup.keep_previous_databases (1): the first restore's directory is gone.
    assert _data_directories(stack) == sorted(["pgdata", restored["kept_as"]])
    status = _cli_json("backup_status_seconds", stack, "backup", "status")
    assert status["archiver"]["failing"] is False, status


def _killed_after(stack: Stack, step: str, *args: str) -> str:
    """Run `orbisctl restore ARGS --yes` and SIGKILL it as soon as `step` has ended (the next
    step has begun); what it printed until then."""
    restore = subprocess.Popen(
        [str(Path(sys.executable).parent / "orbisctl"), "restore", *args, "--yes",
         "--dir", str(stack.root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert restore.stdout is not None
    printed = []
    deadline = time.monotonic() + 300
    for line in restore.stdout:
        printed.append(line)
        if line.startswith(f"{STEP_MARK} {step}… done"):
            restore.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, printed
    restore.wait(timeout=60)
    assert restore.returncode == -signal.SIGKILL, "".join(printed)
    return "".join(printed)


async def test_a_killed_restore_is_undone_before_its_switch_and_finished_after(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    _wait_inside_the_window(stack)
    kept = _email("kept")
    await signup(http, stack, kept)
    target = _server_now(stack)
    dropped = _email("dropped")
    await signup(http, stack, dropped)
    users, directories = _users(stack), _data_directories(stack)
    journal = pitr.PitrJournalStore(stack.root)

    # Killed while the restored cluster is checked: `status` undoes it.
    _killed_after(stack, pitr.STEP_REPLAY, "--to-time", target.isoformat())
    assert journal.load() is not None
    result = stack.cli("status")
    assert result.exit_code == 0, result.output
    assert "undid the interrupted restore" in result.output, result.output
    assert journal.load() is None
    assert _data_directories(stack) == directories
    assert _users(stack) == users
    assert await login_status(http, stack, dropped) == 200

    # Killed as the switch begins: `up` refuses to start postgres, `--resume` finishes.
    _killed_after(stack, pitr.STEP_STOP, "--to-time", target.isoformat())
    loaded = journal.load()
    assert loaded is not None and loaded.phase == "verified", loaded
    refused = stack.cli("up")
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "restore --resume" in refused.output, refused.output
    result = stack.cli("restore", "--resume")
    assert result.exit_code == 0, result.output
    assert "finished the interrupted restore" in result.output, result.output
    assert journal.load() is None
    assert _users(stack) == users - 1
    assert await login_status(http, stack, kept) == 200
    assert await login_status(http, stack, dropped) == 401
    assert _data_directories(stack) == sorted(["pgdata", loaded.kept_as])


async def test_a_corrupt_wal_segment_fails_verify_and_restore_leaves_everything_as_it_was(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    newest = _email("kept")
    await signup(http, stack, newest)
    segment = _archived_path(stack, psql(stack, "SELECT pg_walfile_name(pg_switch_wal())"))
    (container,) = stack.containers("postgres")
    code, original = container.exec_run(
        ["sh", "-c", f"dd if={segment} bs=1 skip=100 count=15 2>/dev/null"]
    )
    assert code == 0 and len(original) == 15, original
    _overwrite(container, segment, b"garbage-garbage")
    users, directories = _users(stack), _data_directories(stack)

    verify = stack.cli("backup", "verify")
    assert verify.exit_code == ExitCode.DATA, verify.output
    assert "pgBackRest verify of repository 1 failed" in verify.output, verify.output
    assert segment.rsplit("/", 1)[1][:24] in verify.output, verify.output

    restore = stack.cli("restore", "--to-latest", "--yes")
    assert restore.exit_code == ExitCode.DATA, restore.output
    assert "missing or unreadable; nothing was changed" in restore.output, restore.output
    assert _users(stack) == users
    assert _data_directories(stack) == directories
    assert await login_status(http, stack, newest) == 200
    assert not pitr.PitrJournalStore(stack.root).path.exists()
    # Put the bytes back: the tests after this one verify the repository.
    _overwrite(container, segment, original)
    assert stack.cli("backup", "verify").exit_code == 0


def _overwrite(container: Any, path: str, data: bytes) -> None:
    """`data` over the bytes of `path` from offset 100 on, inside the container."""
    octal = "".join(f"\\{byte:03o}" for byte in data)
    code, out = container.exec_run(
        ["sh", "-c", f"printf '{octal}' | dd of={path} bs=1 seek=100 conv=notrunc 2>&1"]
    )
    assert code == 0, out


def _archived_path(stack: Stack, name: str) -> str:
    """The path of WAL segment `name` in the local repository, once the async push has put
    it there (the newest segment: the restore to the latest needs it)."""
    (container,) = stack.containers("postgres")
    deadline = time.monotonic() + 60
    while True:
        code, out = container.exec_run(
            ["sh", "-c", f"ls /var/lib/pgbackrest/repo/archive/orbis/*/*/{name}-*"]
        )
        # Not the file the push is still writing (it is renamed into place when complete).
        done = [path for path in out.decode().split() if not path.endswith(".tmp")]
        if code == 0 and done:
            return done[0]
        assert time.monotonic() < deadline, f"{name} never reached the repository"
        time.sleep(0.5)


REMOTE_BUCKET = "orbis-e2e"


def _set_remote(stack: Stack, remote: dict[str, Any] | None) -> None:
    path = stack.root / "orbis.yaml"
    config = yaml.safe_load(path.read_text())
    backup = config.setdefault("backup", {})
    if remote is None:
        backup.pop("remote", None)
    else:
        backup["remote"] = remote
    path.write_text(yaml.safe_dump(config))


def _render_and_up(stack: Stack) -> None:
    for command in ("render", "up"):
        result = stack.cli(command)
        assert result.exit_code == 0, result.output


def _archiver(stack: Stack) -> dict[str, Any]:
    archiver: dict[str, Any] = _cli_json("backup_status_seconds", stack, "backup", "status")[
        "archiver"
    ]
    return archiver


def _doctor_archiving(stack: Stack) -> tuple[int, dict[str, dict[str, str]]]:
    """doctor's exit code and its archiving checks by name."""
    started = time.monotonic()
    result = stack.cli("doctor", "--json")
    TIMINGS.setdefault("doctor_seconds", []).append(round(time.monotonic() - started, 1))
    checks = json.loads(result.stdout)["checks"]
    wanted = ("wal archiving", "backup repository")
    return result.exit_code, {c["name"]: c for c in checks if c["name"].startswith(wanted)}


def _until(what: str, condition: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(1)


async def test_backup_remote_puts_every_segment_and_base_backup_in_the_object_store_too(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (redis,) = stack.containers("redis")
    with s3_container(
        stack.client,
        tmp_path,
        image=redis.image.tags[0],
        network=f"{stack.project}_internal",
        alias="objectstore",
    ) as store:
        store.create_bucket(REMOTE_BUCKET)
        secrets_dir = stack.root / "secrets"
        for name, value in (
            ("remote_access_key", store.access_key),
            ("remote_secret_key", store.secret_key),
        ):
            (secrets_dir / name).write_text(value + "\n")
            (secrets_dir / name).chmod(0o600)
        assert store.ca_file is not None
        shutil.copyfile(store.ca_file, stack.root / "tls" / "remote-ca.crt")
        _set_remote(
            stack,
            {
                "endpoint": store.alias,
                "port": store.port,
                "bucket": REMOTE_BUCKET,
                "uri_style": "path",
                "ca_file": "tls/remote-ca.crt",
                # The store's alias resolves only inside the stack's networks, not on the
                # host where orbisctl copies bundles (tests/backups/test_remote_cli.py does).
                "copy_bundles": False,
            },
        )
        started = time.monotonic()
        _render_and_up(stack)
        TIMINGS["up_with_remote_seconds"] = round(time.monotonic() - started, 1)

        created = _cli_json("backup_create_remote_seconds", stack, "backup", "create")
        kinds = {b["repo"]: b["type"] for b in created["base_backups"]}
        assert kinds == {1: "diff", 2: "full"}, created
        status = _cli_json("backup_status_seconds", stack, "backup", "status")
        remote = status["repositories"][1]
        assert remote["repo"] == 2 and remote["status"] == "ok", status
        assert remote["window"] is not None, status
        keys = store.list_keys(REMOTE_BUCKET, "orbisvoice/")
        assert any(key.startswith("orbisvoice/archive/orbis/") for key in keys), keys
        assert any(key.startswith("orbisvoice/backup/orbis/") for key in keys), keys

        # The store goes away: the segment waits, is not lost, and goes once it is back.
        store.stop()
        await signup(http, stack, _email("outage"))
        segment = psql(stack, "SELECT pg_walfile_name(pg_switch_wal())")
        failed_before = _archiver(stack)["failed_count"]
        started = time.monotonic()
        _until(
            "pg_stat_archiver counts a failure",
            lambda: _archiver(stack)["failed_count"] > failed_before,
            timeout=120,
        )
        code, checks = _doctor_archiving(stack)
        assert code == ExitCode.FAILURE, checks
        assert checks["wal archiving"]["verdict"] == "fail", checks
        assert "archiving WAL fails" in checks["wal archiving"]["detail"], checks
        assert checks["backup repository 2 (backup.remote)"]["verdict"] == "fail", checks
        assert checks["backup repository 1 (local)"]["verdict"] == "pass", checks
        store.start()
        # After its retries PostgreSQL's archiver sleeps up to 60 s; a new segment wakes it.
        psql(stack, "SELECT pg_current_xact_id()")
        psql(stack, "SELECT pg_switch_wal()")
        _until(
            f"{segment} is archived once the store is back",
            lambda: (_archiver(stack)["last_archived_wal"] or "")[:24] >= segment,
            timeout=240,
        )
        TIMINGS["remote_outage_recovered_seconds"] = round(time.monotonic() - started, 1)
        assert _archiver(stack)["failing"] is False
        _, checks = _doctor_archiving(stack)
        assert {name: c["verdict"] for name, c in checks.items()} == {
            "wal archiving": "pass",
            "backup repository 1 (local)": "pass",
            "backup repository 2 (backup.remote)": "pass",
        }, checks
        assert any(segment in key for key in store.list_keys(REMOTE_BUCKET, "orbisvoice/"))

        verified = _cli_json("backup_verify_seconds", stack, "backup", "verify")
        assert verified["repositories_verified"] == [1, 2], verified

        # The bucket alone brings a moment back.
        _wait_inside_the_window(stack, repo=2)
        kept = _email("kept-remote")
        await signup(http, stack, kept)
        target = _server_now(stack)
        dropped = _email("dropped-remote")
        await signup(http, stack, dropped)
        restored = _cli_json(
            "restore_from_remote_seconds",
            stack,
            "restore", "--to-time", target.isoformat(), "--repo", "2", "--yes",
        )  # fmt: skip
        assert restored["full_backup"], restored
        assert await login_status(http, stack, kept) == 200
        assert await login_status(http, stack, dropped) == 401

        # Back to the local repository alone: the store is removed with this block.
        _set_remote(stack, None)
        _render_and_up(stack)
