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
