"""Retention: the keep-daily/weekly/monthly policy (property tests) and prune on a repository."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from backups import manifest, retention
from backups.partials import WRITER_PID_FILE
from backups.restore_lock import RESTORE_LOCK
from backups.retention import Dated, keep_set
from orbisctl.cli import app
from orbisctl.core.config import BackupConfig, OrbisConfig, RetentionConfig, dump_config
from tests.backups.conftest import hold_writer_lock

START = datetime(2026, 1, 1, tzinfo=UTC)

backup_times = st.lists(
    st.integers(min_value=0, max_value=400 * 24 * 60).map(lambda m: START + timedelta(minutes=m)),
    max_size=60,
    unique=True,
)
policies = st.builds(
    RetentionConfig,
    daily=st.integers(0, 10),
    weekly=st.integers(0, 6),
    monthly=st.integers(0, 14),
)


def _dated(times: list[datetime]) -> list[Dated]:
    return [Dated(f"b{index:03d}", when) for index, when in enumerate(times)]


@settings(max_examples=200, deadline=None)
@given(backup_times, policies, st.data())
def test_policy_properties(
    times: list[datetime], policy: RetentionConfig, data: st.DataObject
) -> None:
    backups = _dated(times)
    ids = [b.backup_id for b in backups]
    protected = frozenset(data.draw(st.sets(st.sampled_from(ids))) if ids else set())
    kept = keep_set(backups, policy, protected=protected)

    assert kept <= set(ids)
    assert protected <= kept
    if backups:
        assert max(backups, key=lambda b: b.created_at).backup_id in kept
    assert len(kept) <= policy.daily + policy.weekly + policy.monthly + 1 + len(protected)
    # The newest backup of each of the last `daily` days with backups survives.
    days = sorted({b.created_at.date() for b in backups}, reverse=True)[: policy.daily]
    for day in days:
        newest = max((b for b in backups if b.created_at.date() == day), key=lambda b: b.created_at)
        assert newest.backup_id in kept
    # Pruning what was kept keeps all of it: a second prune deletes nothing.
    survivors = [b for b in backups if b.backup_id in kept]
    assert keep_set(survivors, policy, protected=protected) == kept


def test_policy_example_a_year_of_nightlies() -> None:
    backups = _dated([START + timedelta(days=day, hours=3) for day in range(365)])
    kept = keep_set(backups, RetentionConfig(daily=7, weekly=4, monthly=12))
    kept_days = {b.created_at.date() for b in backups if b.backup_id in kept}
    daily = {date(2026, 12, day) for day in range(25, 32)}
    # ISO weeks 53 and 52 already have a daily; weeks 51 and 50 add their Sundays.
    weekly = {date(2026, 12, 20), date(2026, 12, 13)}
    monthly = {date(2026, month + 1, 1) - timedelta(days=1) for month in range(1, 12)}
    assert kept_days == daily | weekly | monthly


def fake_backup(repository: Path, when: datetime, label: str = "") -> str:
    backup_id = when.strftime("%Y%m%dT%H%M%SZ") + "-000000"
    path = repository / backup_id
    path.mkdir(parents=True)
    info = manifest.Manifest(
        backup_id=backup_id,
        label=label,
        created_at=when,
        app_version="0.1.0",
        schema_version=1,
        postgres_version="15",
        database="orbis",
        components={},
        row_counts={},
        key_wraps=[],
    )
    (path / manifest.MANIFEST_FILE).write_bytes(manifest.render(info, "0" * 64))
    return backup_id


def test_prune_spares_the_backup_a_restore_uses_and_removes_abandoned_partials(
    tmp_path: Path,
) -> None:
    repository = tmp_path / "backups"
    ids = [fake_backup(repository, START + timedelta(days=day)) for day in range(5)]
    (repository / RESTORE_LOCK).write_text(json.dumps({"backup_id": ids[0], "pid": os.getpid()}))
    dead = repository / ".partial-20260101T000000Z-abcdef"
    dead.mkdir()
    (dead / WRITER_PID_FILE).write_text("999999999")
    alive = repository / ".partial-20260102T000000Z-abcdef"
    alive.mkdir()
    writer = hold_writer_lock(alive)  # a backup writing now holds its writer.pid lock

    plan = retention.plan_prune(repository, RetentionConfig(daily=1, weekly=0, monthly=0))

    assert plan.keep == [ids[0], ids[4]] and plan.labelled == []
    assert plan.delete == ids[1:4]
    assert plan.partial == [dead]
    try:
        retention.apply_prune(repository, plan)
    finally:
        os.close(writer)
    assert sorted(p.name for p in repository.iterdir() if not p.name.startswith(".")) == [
        ids[0],
        ids[4],
    ]
    assert alive.exists() and not dead.exists()


ONE_DAILY = RetentionConfig(daily=1, weekly=0, monthly=0)


def test_prune_keeps_a_labelled_manual_backup_unless_asked(tmp_path: Path) -> None:
    """A manual backup labelled "before delete" taken the same day as a later nightly one
    is kept (issue 15, item 7); the policy counts only unlabelled backups, so the nightly one
    of that day stays too. `include_labelled` applies the policy to every backup."""
    repository = tmp_path / "backups"
    old_nightly = fake_backup(repository, START.replace(hour=3))
    manual = fake_backup(repository, START + timedelta(days=1, hours=10), "before delete")
    nightly = fake_backup(repository, START + timedelta(days=1, hours=23))
    safety = fake_backup(repository, START + timedelta(hours=12), "pre-restore")

    plan = retention.plan_prune(repository, ONE_DAILY)
    assert plan.keep == sorted([manual, nightly, safety])
    assert plan.labelled == sorted([manual, safety])
    assert plan.delete == [old_nightly]

    everything = retention.plan_prune(repository, ONE_DAILY, include_labelled=True)
    assert everything.keep == [nightly] and everything.labelled == []
    assert everything.delete == sorted([old_nightly, manual, safety])


def test_prune_command_keeps_labelled_backups_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "install"
    root.mkdir()
    (root / "orbis.yaml").write_text(
        dump_config(OrbisConfig(backup=BackupConfig(retention=ONE_DAILY)))
    )
    repository = root / "backups"
    manual = fake_backup(repository, START + timedelta(hours=10), "before delete")
    nightly = fake_backup(repository, START + timedelta(hours=23))
    runner = CliRunner()

    result = runner.invoke(app, ["backup", "prune", "--dir", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "kept 2 backup(s) (1 labelled" in result.stdout and "--include-labelled" in result.stdout
    assert (repository / manual).is_dir() and (repository / nightly).is_dir()

    result = runner.invoke(
        app,
        ["backup", "prune", "--dir", str(root), "--include-labelled", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["delete"] == [manual]
    assert not (repository / manual).exists() and (repository / nightly).is_dir()
