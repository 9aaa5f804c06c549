"""The object-store repository with the real pgBackRest 2.45 and a real S3 server (SeaweedFS,
tests/objectstore.py) on loopback over TLS: archiving into the local directory and the bucket
at once, a point-in-time restore from the bucket alone (as a new host would do it, with no
local repository), and the faults an operator meets: wrong keys, a missing bucket, the store
going away while WAL is pushed and coming back."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from backups import archive, pgbackrest_config
from backups.executor import LocalExecutor
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
    writes_around_a_target,
)
from tests.objectstore import S3Server, s3_server
from tests.services import PostgresServer, postgres_server

BUCKET = "orbis-backups"
LOCAL_PASS = "the-local-repository-passphrase"
REMOTE_PASS = "the-remote-repository-passphrase"


@dataclass
class Remote:
    server: PostgresServer
    store: S3Server
    base: Path
    pgbackrest: archive.PgBackRest
    executor: LocalExecutor

    def configured(
        self,
        name: str,
        repositories: Sequence[pgbackrest_config.Repository],
        keys: Sequence[pgbackrest_config.RepositoryKeys],
    ) -> archive.PgBackRest:
        """A pgBackRest configuration of its own under base/name."""
        return configure(self.base / name, self.server, repositories, keys)

    def bucket_repository(self, bucket: str = BUCKET) -> pgbackrest_config.Repository:
        store = pgbackrest_config.ObjectStore(
            # pgBackRest 2.45 matches the certificate by name only, never by IP address.
            endpoint="localhost",
            bucket=bucket,
            region=self.store.region,
            port=self.store.port,
            uri_style="path",
            ca_file=self.store.ca_file,
        )
        return pgbackrest_config.Repository("/orbis", store)

    def bucket_keys(self, *, secret_key: str | None = None) -> pgbackrest_config.RepositoryKeys:
        return pgbackrest_config.RepositoryKeys(
            REMOTE_PASS, self.store.access_key, secret_key or self.store.secret_key
        )


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    base = Path(tempfile.mkdtemp(prefix="orbis-pgbackrest-s3-"))
    as_postgres(base)
    extra = archiving_conf(base / "live")
    with (
        s3_server(base) as store,
        postgres_server(extra_conf=extra, initdb_args=("--data-checksums",)) as server,
    ):
        store.create_bucket(BUCKET)
        (base / "repo").mkdir()
        as_postgres(base / "repo")
        found = Remote(server, store, base, archive.PgBackRest(), LocalExecutor(server.url(), ""))
        found.pgbackrest = found.configured(
            "live",
            [pgbackrest_config.Repository(str(base / "repo")), found.bucket_repository()],
            [pgbackrest_config.RepositoryKeys(LOCAL_PASS), found.bucket_keys()],
        )
        archive.create_stanza(found.pgbackrest)
        try:
            yield found
        finally:
            server.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_the_bucket_alone_restores_to_a_time_between_two_writes(remote: Remote) -> None:
    archive.base_backup(remote.pgbackrest, archive.BackupKind.FULL, repo=2)
    past_the_newest_backup(remote.pgbackrest, remote.server, repo=2)
    target = writes_around_a_target(remote.server)
    archive.check_archiving(remote.pgbackrest)
    states = archive.repository_states(remote.pgbackrest)
    assert states[1].ok, states[1].status
    window = archive.recovery_window(states[1], archived_after(remote.executor, target))
    assert window is not None
    archive.check_target(target, window)
    assert remote.store.list_keys(BUCKET, "orbis/archive/")

    # A new host: its configuration knows no local repository, only the bucket and its keys.
    new_host = remote.configured("new-host", [remote.bucket_repository()], [remote.bucket_keys()])
    restored = empty_dir(remote.base, "restored")
    assert rows_restored_to(new_host, remote.server, restored, target) == list(range(10))


def test_a_wrong_secret_key_is_refused_and_names_the_key_files(remote: Remote) -> None:
    wrong = remote.configured(
        "wrong-key", [remote.bucket_repository()], [remote.bucket_keys(secret_key="nope" * 10)]
    )
    with pytest.raises(EngineError, match="full backup failed") as refused:
        archive.base_backup(wrong, archive.BackupKind.FULL)
    assert "access key and secret key" in (refused.value.hint or "")
    assert "nope" not in str(refused.value)


def test_a_missing_bucket_is_refused_and_says_to_create_it(remote: Remote) -> None:
    missing = remote.configured(
        "no-bucket", [remote.bucket_repository("no-such-bucket")], [remote.bucket_keys()]
    )
    with pytest.raises(EngineError, match="stanza-create failed") as refused:
        archive.create_stanza(missing)
    assert "create the bucket" in (refused.value.hint or "")


def test_a_damaged_object_in_the_bucket_fails_verification(remote: Remote) -> None:
    archive.verify_repository(remote.pgbackrest, repo=2)
    files = [key for key in remote.store.list_keys(BUCKET, "orbis/backup/") if "/pg_data/" in key]
    original = remote.store.get(BUCKET, files[0])
    remote.store.corrupt(BUCKET, files[0])
    try:
        with pytest.raises(DataError, match="verify of repository 2 failed"):
            archive.verify_repository(remote.pgbackrest, repo=2)
    finally:
        remote.store.put(BUCKET, files[0], original)
    archive.verify_repository(remote.pgbackrest, repo=2)


def test_archiving_survives_the_store_going_away_and_drains_when_it_returns(
    remote: Remote,
) -> None:
    remote.store.stop()
    try:
        insert(remote.server, range(1000, 1010))
        with psycopg.connect(remote.server.conninfo(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
            assert row is not None
            segment: str = row[0]
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 120
        while not archive.archiver_state(remote.executor).failing:
            assert time.monotonic() < deadline, "archiving never reported the store's absence"
            time.sleep(0.5)
        # Nothing is lost meanwhile: the segment waits in pg_wal (and reached the local repo).
        assert (remote.server.data_dir / "pg_wal" / segment).exists()
    finally:
        remote.store.start()
    archive.check_archiving(remote.pgbackrest)
    states = archive.repository_states(remote.pgbackrest)
    assert all((s.wal_max or "") >= segment for s in states), states
    assert not archive.archiver_state(remote.executor).failing
