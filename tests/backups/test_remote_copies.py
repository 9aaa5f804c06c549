"""The backup bundles' copies in backup.remote's bucket (backups/remote_copies.py), against a
real S3 server (SeaweedFS on loopback over TLS, tests/objectstore.py) and real backups of a
real PostgreSQL and Redis: push, list, pull on a host whose local repository is gone, prune by
the same policy as the local repository, and what the store refuses, said in one line."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backups import manifest
from backups.create import create_backup
from backups.remote_copies import ABANDONED_AFTER, INCOMPLETE, RemoteCopies, install_bucket
from backups.verify import open_backup
from orbisctl.core.config import RetentionConfig
from orbisctl.core.errors import DataError, StorageError, UserError
from orbisctl.core.install import Install
from orbisctl.core.secretfiles import REMOTE_SECRET_KEY
from tests.backups.conftest import Stack
from tests.backups.remote import BUNDLES_PREFIX, with_remote
from tests.objectstore import S3Server

pytestmark = pytest.mark.integration


@pytest.fixture
def install(stack: Stack, store: S3Server, bucket: str) -> Install:
    return with_remote(stack.install, store, bucket)


def _copies(install: Install) -> RemoteCopies:
    found = install_bucket(install)
    assert found is not None
    return RemoteCopies(found)


def _backup(stack: Stack, install: Install, **kwargs: object) -> Path:
    result = create_backup(install, stack.executor, stack.ring(), **kwargs)  # type: ignore[arg-type]
    return install.repository / result.backup_id


def _pushed(stack: Stack, install: Install) -> tuple[Path, RemoteCopies]:
    """A new backup, copied to the bucket."""
    backup = _backup(stack, install)
    copies = _copies(install)
    copies.push(backup)
    return backup, copies


def test_a_pushed_backup_is_in_the_bucket_byte_for_byte_and_a_second_push_sends_nothing(
    stack: Stack, install: Install, store: S3Server, bucket: str
) -> None:
    backup = _backup(stack, install, label="before the upgrade")
    copies = _copies(install)

    first = copies.push(backup)
    again = copies.push(backup)

    files = sorted(path.name for path in backup.iterdir())
    assert sorted(store.list_keys(bucket, BUNDLES_PREFIX + backup.name + "/")) == [
        f"{BUNDLES_PREFIX}{backup.name}/{name}" for name in files
    ]
    for name in files:
        assert (
            store.get(bucket, f"{BUNDLES_PREFIX}{backup.name}/{name}")
            == (backup / name).read_bytes()
        )
    assert first.uploaded_bytes == sum(
        (backup / name).stat().st_size for name in files if name != manifest.MANIFEST_FILE
    )
    assert again.uploaded_bytes == 0
    [listed] = copies.bundles()
    assert listed.manifest is not None
    assert (listed.backup_id, listed.manifest.label) == (backup.name, "before the upgrade")
    assert listed.size == sum((backup / name).stat().st_size for name in files)


def test_a_new_host_pulls_the_bundle_and_opens_it_with_the_key(
    stack: Stack, install: Install
) -> None:
    backup, copies = _pushed(stack, install)
    original = {path.name: path.read_bytes() for path in backup.iterdir()}
    shutil.rmtree(install.repository)  # the old disk is gone

    pulled = copies.pull(backup.name, install.repository)

    assert pulled == install.repository / backup.name
    assert {path.name: path.read_bytes() for path in pulled.iterdir()} == original
    opened = open_backup(pulled, stack.ring(), executor=stack.executor)
    assert opened.manifest.backup_id == backup.name
    assert not [p for p in install.repository.iterdir() if p.name.startswith(".")]


def test_a_damaged_copy_is_refused_and_leaves_nothing_in_the_repository(
    stack: Stack, install: Install, store: S3Server, bucket: str
) -> None:
    backup, copies = _pushed(stack, install)
    loaded = manifest.load(backup / manifest.MANIFEST_FILE).manifest
    dump = loaded.components["database"].file
    store.corrupt(bucket, f"{BUNDLES_PREFIX}{backup.name}/{dump}")
    shutil.rmtree(install.repository)

    with pytest.raises(DataError, match=f"{dump} from backup\\.remote does not match"):
        copies.pull(backup.name, install.repository)

    assert list(install.repository.iterdir()) == []


def test_an_unknown_backup_id_is_a_one_line_refusal(install: Install) -> None:
    with pytest.raises(UserError, match=r"backup\.remote holds no complete backup 20200101"):
        _copies(install).pull("20200101T000000Z-abcdef", install.repository)
    assert not install.repository.exists() or list(install.repository.iterdir()) == []


def test_an_interrupted_copy_is_listed_incomplete_finished_by_the_next_push_and_pruned_when_old(
    stack: Stack, install: Install, store: S3Server, bucket: str
) -> None:
    backup, copies = _pushed(stack, install)
    client = store.client()
    client.delete_object(
        Bucket=bucket, Key=f"{BUNDLES_PREFIX}{backup.name}/{manifest.MANIFEST_FILE}"
    )

    [listed] = copies.bundles()
    assert (listed.manifest, listed.problem) == (None, INCOMPLETE)
    assert copies.complete() == []
    policy = RetentionConfig()
    assert copies.plan_prune(policy).incomplete == []  # it may be a push going on now
    later = datetime.now(UTC) + ABANDONED_AFTER + timedelta(minutes=1)
    assert copies.plan_prune(policy, now=later).incomplete == [backup.name]

    copies.push(backup)
    assert [b.backup_id for b in copies.complete()] == [backup.name]


def test_prune_keeps_what_the_policy_keeps_and_labelled_ones_and_deletes_the_rest(
    stack: Stack, install: Install, store: S3Server, bucket: str
) -> None:
    today = datetime.now(UTC).replace(microsecond=0)
    old = _backup(stack, install, now=today - timedelta(days=3))
    labelled = _backup(stack, install, now=today - timedelta(days=2), label="keep me")
    newest = _backup(stack, install, now=today)
    copies = _copies(install)
    for backup in (old, labelled, newest):
        copies.push(backup)

    plan = copies.plan_prune(RetentionConfig(daily=1, weekly=0, monthly=0))
    assert (plan.keep, plan.delete, plan.labelled) == (
        sorted([labelled.name, newest.name]),
        [old.name],
        [labelled.name],
    )
    copies.delete(plan.delete)

    assert [b.backup_id for b in copies.bundles()] == sorted([labelled.name, newest.name])
    assert store.list_keys(bucket, f"{BUNDLES_PREFIX}{old.name}/") == []


def test_a_wrong_secret_key_names_the_key_files_and_not_the_key(
    stack: Stack, store: S3Server, bucket: str
) -> None:
    install = with_remote(stack.install, store, bucket, secret_key="not-the-secret-key")
    with pytest.raises(StorageError) as refused:
        _copies(install).bundles()
    assert "SignatureDoesNotMatch" in refused.value.message
    assert "secrets/remote_secret_key" in (refused.value.hint or "")
    assert "not-the-secret-key" not in refused.value.message + (refused.value.hint or "")


def test_a_missing_bucket_says_create_the_bucket(stack: Stack, store: S3Server) -> None:
    install = with_remote(stack.install, store, "no-such-bucket-here")
    with pytest.raises(StorageError, match="the bucket does not exist") as refused:
        _copies(install).bundles()
    assert "create the bucket" in (refused.value.hint or "")


def test_a_store_that_does_not_answer_is_named_with_its_endpoint(
    stack: Stack, store: S3Server, bucket: str
) -> None:
    from tests.services import free_port

    port = free_port()
    install = with_remote(stack.install, store, bucket, port=port)
    with pytest.raises(StorageError, match=f"cannot reach the object store at localhost:{port}"):
        _copies(install).bundles()


def test_missing_key_files_are_a_one_line_refusal(install: Install) -> None:
    install.secret(REMOTE_SECRET_KEY).unlink()
    with pytest.raises(UserError, match="remote_secret_key is unreadable"):
        install_bucket(install)
