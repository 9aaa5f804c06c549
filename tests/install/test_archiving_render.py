"""Continuous archiving as `init` and `render` lay it out (issue 16): the postgres service,
pgBackRest's two configuration halves, and what an older install is given by `up`."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from backups.archive import BackupKind, BaseBackup, RepositoryState
from backups.archive_stack import next_kind
from orbisctl.core.config import parse_config
from orbisctl.installer import complete_archive_secrets
from orbisctl.render import render_stack
from tests.install.helpers import invoke


def _postgres(root: Path) -> dict[str, object]:
    service: dict[str, object] = yaml.safe_load((root / "compose.yaml").read_text())["services"][
        "postgres"
    ]
    return service


def test_postgres_archives_every_segment_through_pgbackrest(default_install: Path) -> None:
    postgres = _postgres(default_install)
    assert postgres["command"] == [
        "postgres",
        "-c",
        "archive_mode=on",
        "-c",
        "archive_timeout=60",
        "-c",
        "archive_command=pgbackrest --stanza=orbis archive-push %p",
    ]
    environment = postgres["environment"]
    assert isinstance(environment, dict)
    assert environment["POSTGRES_INITDB_ARGS"] == "--data-checksums"
    assert environment["PGBACKREST_CONFIG_INCLUDE_PATH"] == "/run/secrets/pgbackrest"
    assert "./pgbackrest:/etc/pgbackrest:ro" in postgres["volumes"]  # type: ignore[operator]
    secrets = postgres["secrets"]
    assert {"source": "pgbackrest_secret", "target": "/run/secrets/pgbackrest/secret.conf"} in (
        secrets  # type: ignore[operator]
    )


def test_the_passphrase_is_only_in_secrets(default_install: Path) -> None:
    key = (default_install / "secrets" / "archive_key").read_text().strip()
    secret = default_install / "secrets" / "pgbackrest.conf"
    assert secret.read_text() == f"[global]\nrepo1-cipher-pass={key}\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    plain = (default_install / "pgbackrest" / "pgbackrest.conf").read_text()
    assert "repo1-cipher-type=aes-256-cbc" in plain
    assert "repo1-path=/var/lib/pgbackrest/repo" in plain
    assert "repo1-retention-full=7" in plain
    for path in default_install.rglob("*"):
        if path.is_file() and "secrets" not in path.parts:
            assert key not in path.read_text(errors="replace"), path


def test_archiving_off_renders_postgres_without_it() -> None:
    files = render_stack(parse_config({"backup": {"archive": {"enabled": False}}}))
    assert Path("pgbackrest/pgbackrest.conf") not in files
    compose = yaml.safe_load(files[Path("compose.yaml")])
    assert "command" not in compose["services"]["postgres"]
    assert "pgbackrest_data" not in compose["volumes"]


def test_up_gives_an_older_install_its_archive_secrets(default_install: Path) -> None:
    secrets = default_install / "secrets"
    (secrets / "archive_key").unlink()
    (secrets / "pgbackrest.conf").unlink()
    created = complete_archive_secrets(default_install)
    assert created == ["secrets/archive_key", "secrets/pgbackrest.conf"]
    key = (secrets / "archive_key").read_text().strip()
    assert f"repo1-cipher-pass={key}" in (secrets / "pgbackrest.conf").read_text()
    assert complete_archive_secrets(default_install) == []


def test_init_again_keeps_the_archive_key(default_install: Path) -> None:
    before = (default_install / "secrets" / "archive_key").read_bytes()
    result = invoke("init", "--dir", str(default_install), "--non-interactive")
    assert result.exit_code == 0, result.output
    assert (default_install / "secrets" / "archive_key").read_bytes() == before
    assert "kept     secrets/pgbackrest.conf" in result.output


def _backup(kind: BackupKind, started: datetime) -> BaseBackup:
    return BaseBackup(
        label=f"{started:%Y%m%d-%H%M%S}{kind.value[0].upper()}",
        kind=kind,
        started=started,
        stopped=started + timedelta(minutes=1),
        wal_start="000000010000000000000002",
        wal_stop="000000010000000000000002",
    )


def test_a_full_backup_every_full_every_days_and_differential_between() -> None:
    now = datetime(2026, 12, 5, 3, tzinfo=UTC)
    week = timedelta(days=7)
    assert next_kind(None, full_every=week, now=now) is BackupKind.FULL
    empty = RepositoryState(1, "no valid backups", (), None, None)
    assert next_kind(empty, full_every=week, now=now) is BackupKind.FULL
    recent = RepositoryState(
        1,
        "ok",
        (
            _backup(BackupKind.FULL, now - timedelta(days=6)),
            _backup(BackupKind.DIFFERENTIAL, now - timedelta(days=1)),
        ),
        None,
        None,
    )
    assert next_kind(recent, full_every=week, now=now) is BackupKind.DIFFERENTIAL
    assert next_kind(recent, full_every=timedelta(days=6), now=now) is BackupKind.FULL


_REMOTE = {
    "endpoint": "s3.eu-central-003.backblazeb2.com",
    "bucket": "acme-orbis-backups",
    "region": "eu-central-003",
    "ca_file": "tls/remote-ca.crt",
}


def _with_remote(root: Path, remote: dict[str, object]) -> None:
    config = yaml.safe_load((root / "orbis.yaml").read_text())
    config.setdefault("backup", {})["remote"] = remote
    (root / "orbis.yaml").write_text(yaml.safe_dump(config))


def test_backup_remote_is_pgbackrests_second_repository_in_the_stack() -> None:
    files = render_stack(parse_config({"backup": {"remote": _REMOTE}}))
    plain = files[Path("pgbackrest/pgbackrest.conf")]
    for line in (
        "repo1-path=/var/lib/pgbackrest/repo",
        "repo2-type=s3",
        "repo2-path=/orbisvoice",
        "repo2-s3-endpoint=s3.eu-central-003.backblazeb2.com",
        "repo2-s3-bucket=acme-orbis-backups",
        "repo2-s3-region=eu-central-003",
        "repo2-s3-uri-style=host",
        "repo2-storage-port=443",
        "repo2-storage-verify-tls=y",
        "repo2-storage-ca-file=/etc/ssl/orbis-remote-ca.crt",
        "repo2-cipher-type=aes-256-cbc",
        "repo2-retention-full=7",
    ):
        assert line in plain.splitlines(), line
    compose = yaml.safe_load(files[Path("compose.yaml")])
    postgres = compose["services"]["postgres"]
    assert "./tls/remote-ca.crt:/etc/ssl/orbis-remote-ca.crt:ro" in postgres["volumes"]
    # The internal network has no route out: the object store is reached through its own.
    assert postgres["networks"] == ["internal", "archive_egress"]
    assert compose["networks"]["archive_egress"] == {}
    assert compose["networks"]["internal"] == {"internal": True}


def test_without_backup_remote_there_is_one_repository() -> None:
    files = render_stack(parse_config({}))
    assert "repo2" not in files[Path("pgbackrest/pgbackrest.conf")]
    compose = yaml.safe_load(files[Path("compose.yaml")])
    postgres = compose["services"]["postgres"]
    assert not any("orbis-remote-ca" in volume for volume in postgres["volumes"])
    assert postgres["networks"] == ["internal"]
    assert "archive_egress" not in compose["networks"]


def test_the_object_stores_keys_go_only_to_secrets(default_install: Path) -> None:
    secrets = default_install / "secrets"
    (secrets / "remote_access_key").write_text("AKIAEXAMPLEACCESS\n")
    (secrets / "remote_secret_key").write_text("wJalrXUtnFEMI/EXAMPLEsecret\n")
    _with_remote(default_install, _REMOTE)
    assert complete_archive_secrets(default_install) == ["secrets/pgbackrest.conf"]
    key = (secrets / "archive_key").read_text().strip()
    assert (secrets / "pgbackrest.conf").read_text().splitlines() == [
        "[global]",
        f"repo1-cipher-pass={key}",
        f"repo2-cipher-pass={key}",
        "repo2-s3-key=AKIAEXAMPLEACCESS",
        "repo2-s3-key-secret=wJalrXUtnFEMI/EXAMPLEsecret",
    ]
    result = invoke("render", "--dir", str(default_install))
    assert result.exit_code == 0, result.output
    for path in default_install.rglob("*"):
        if path.is_file() and "secrets" not in path.parts:
            text = path.read_text(errors="replace")
            assert "AKIAEXAMPLEACCESS" not in text, path
            assert "EXAMPLEsecret" not in text, path


def test_a_missing_remote_key_file_is_one_line_naming_it(default_install: Path) -> None:
    _with_remote(default_install, _REMOTE)
    result = invoke("init", "--dir", str(default_install), "--non-interactive")
    assert result.exit_code != 0, result.output
    assert "backup.remote is set but" in result.output, result.output
    assert "remote_access_key is missing or empty" in result.output, result.output
    assert "Traceback" not in result.output


def test_a_bad_remote_value_names_its_key_path(default_install: Path) -> None:
    _with_remote(default_install, {**_REMOTE, "endpoint": "https://s3.example.com/x"})
    result = invoke("render", "--dir", str(default_install))
    assert result.exit_code == 2, result.output
    assert "backup.remote.endpoint" in result.output, result.output
    _with_remote(default_install, {**_REMOTE, "ca_file": "/etc/ssl/ca.pem"})
    result = invoke("render", "--dir", str(default_install))
    assert result.exit_code == 2, result.output
    assert "backup.remote.ca_file" in result.output, result.output
    _with_remote(default_install, {"bucket": "acme"})
    result = invoke("render", "--dir", str(default_install))
    assert result.exit_code == 2, result.output
    assert "backup.remote.endpoint" in result.output, result.output
