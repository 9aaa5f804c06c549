"""`orbisctl backup remote …`, and `backup create`/`prune`/doctor with backup.remote set,
in-process against real PostgreSQL, Redis and an S3 server on loopback (SeaweedFS over TLS)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from backups.create import create_backup
from orbisctl import doctor
from orbisctl.cli import app
from orbisctl.core.errors import ExitCode
from orbisctl.output import STEP_MARK
from tests.backups.conftest import Stack
from tests.backups.remote import BUNDLES_PREFIX, with_remote
from tests.objectstore import S3Server
from tests.services import free_port

pytestmark = pytest.mark.integration


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, list(args), catch_exceptions=False)


def _json(cli: CliRunner, *args: str) -> Any:
    result = _run(cli, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line and not line.startswith(STEP_MARK)]


def test_create_copies_the_backup_and_a_new_host_pulls_and_restores_it(
    cli: CliRunner, stack: Stack, store: S3Server, bucket: str
) -> None:
    with_remote(stack.install, store, bucket)

    created = _json(cli, "backup", "create")
    listed = _json(cli, "backup", "remote", "list")
    again = _run(cli, "backup", "remote", "push")

    [copy] = created["remote_copies"]
    assert copy["id"] == created["id"] and copy["uploaded_bytes"] > 0
    assert [(b["id"], b["problem"]) for b in listed] == [(created["id"], None)]
    assert again.exit_code == 0 and "holds every local backup already" in again.stdout
    # The old host's disk is gone; the new one has the same orbis.yaml and secrets.
    shutil.rmtree(stack.install.repository)
    with stack.connect() as conn:
        conn.execute("DELETE FROM transcripts")
    pulled = _json(cli, "backup", "remote", "pull", "latest")
    restored = _run(cli, "restore", created["id"], "--yes")
    assert pulled["id"] == created["id"]
    assert restored.exit_code == 0, restored.output
    assert stack.count("transcripts") == 2000


def test_a_store_outage_keeps_the_backup_here_says_so_in_one_line_and_the_next_one_catches_up(
    cli: CliRunner, stack: Stack, store: S3Server, bucket: str
) -> None:
    port = free_port()
    unreachable = with_remote(stack.install, store, bucket, port=port)

    failed = _run(cli, "backup", "create")
    outage = doctor.check_remote_copies(doctor.DoctorContext(unreachable))

    assert failed.exit_code == ExitCode.STORAGE
    [error, hint] = _error_lines(failed)
    assert error.startswith("error: backup ") and "is kept here, but copying it" in error
    assert f"cannot reach the object store at localhost:{port}" in error
    assert "`orbisctl backup remote push` copies it" in hint
    assert "Traceback" not in failed.output
    [kept] = [p.name for p in stack.install.repository.iterdir() if not p.name.startswith(".")]
    assert [c.verdict for c in outage] == [doctor.Verdict.FAIL]

    install = with_remote(stack.install, store, bucket)  # the store is back
    pending = doctor.check_remote_copies(doctor.DoctorContext(install))
    created = _json(cli, "backup", "create")
    caught_up = doctor.check_remote_copies(doctor.DoctorContext(install))

    assert [c.verdict for c in pending] == [doctor.Verdict.WARN]
    assert kept in pending[0].detail
    assert sorted(copy["id"] for copy in created["remote_copies"]) == sorted([kept, created["id"]])
    assert [c.verdict for c in caught_up] == [doctor.Verdict.PASS]
    # Both copies counted (the two backups may share their second: either is "newest").
    assert f"2 in s3://{bucket}/" in caught_up[0].detail


def test_prune_applies_the_policy_to_the_bucket_too(
    cli: CliRunner, stack: Stack, store: S3Server, bucket: str
) -> None:
    install = with_remote(
        stack.install,
        store,
        bucket,
        backup={"retention": {"daily": 1, "weekly": 0, "monthly": 0}},
    )
    today = datetime.now(UTC).replace(microsecond=0)
    old, newest = (
        create_backup(install, stack.executor, stack.ring(), now=today - timedelta(days=age))
        for age in (3, 0)
    )
    pushed = _json(cli, "backup", "remote", "push")

    planned = _json(cli, "backup", "prune", "--dry-run")
    untouched = store.list_keys(bucket, f"{BUNDLES_PREFIX}{old.backup_id}/")
    pruned = _run(cli, "backup", "prune")

    assert sorted(p["id"] for p in pushed) == sorted([old.backup_id, newest.backup_id])
    assert planned["remote"]["delete"] == [old.backup_id]
    assert planned["remote"]["keep"] == [newest.backup_id]
    assert untouched  # a dry run deletes nothing
    assert pruned.exit_code == 0, pruned.output
    assert f"deleted {old.backup_id} in backup.remote" in pruned.stdout
    assert store.list_keys(bucket, f"{BUNDLES_PREFIX}{old.backup_id}/") == []
    assert [b["id"] for b in _json(cli, "backup", "remote", "list")] == [newest.backup_id]


def test_without_backup_remote_the_verbs_refuse_in_one_line(cli: CliRunner) -> None:
    for verb in ("list", "push"):
        result = _run(cli, "backup", "remote", verb)
        assert result.exit_code == ExitCode.USAGE
        [error, hint] = _error_lines(result)
        assert (
            error
            == "error: backup.remote is not set in orbis.yaml: the backups live on this host only"
        )
        assert "secrets/remote_access_key" in hint


def test_pulling_an_unknown_backup_is_a_one_line_refusal(
    cli: CliRunner, stack: Stack, store: S3Server, bucket: str
) -> None:
    with_remote(stack.install, store, bucket)
    latest = _run(cli, "backup", "remote", "pull", "latest")
    unknown = _run(cli, "backup", "remote", "pull", "20200101T000000Z-abcdef")
    assert latest.exit_code == unknown.exit_code == ExitCode.USAGE
    assert "there is no complete backup in" in latest.stderr
    assert "holds no complete backup 20200101T000000Z-abcdef" in unknown.stderr
    assert not stack.install.repository.exists() or not list(stack.install.repository.iterdir())


def test_copy_bundles_false_keeps_create_from_the_bucket(
    cli: CliRunner, stack: Stack, store: S3Server, bucket: str
) -> None:
    with_remote(stack.install, store, bucket, remote={"copy_bundles": False})
    created = _json(cli, "backup", "create")
    assert created["remote_copies"] == []
    assert store.list_keys(bucket, BUNDLES_PREFIX) == []
    pushed = _json(cli, "backup", "remote", "push")  # by hand it still copies
    assert [p["id"] for p in pushed] == [created["id"]]
