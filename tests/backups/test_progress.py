"""`backup create`, `backup verify` and `restore` show their steps off a terminal (one line
each on stderr, with its duration and bytes), and `--json` on stdout stays valid JSON."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from backups.ports import STEP_CHECK_ROWS, STEP_RESTORE_DATABASE, STEP_VERIFY
from orbisctl.cli import app
from orbisctl.output import STEP_MARK
from tests.backups.conftest import Stack


@pytest.fixture
def cli(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ORBIS_DIR", str(stack.install.root))
    monkeypatch.setenv("ORBIS_BACKUP_DATABASE_URL", stack.executor.database_url)
    monkeypatch.setenv("ORBIS_BACKUP_REDIS_URL", stack.executor.redis_url)
    return CliRunner()


STEP_LINE = re.compile(rf"^{STEP_MARK} (?P<step>.+)… done in \d+\.\d s(, .+)?$")


def _steps(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    steps = [m["step"] for line in lines if (m := STEP_LINE.match(line))]
    assert len(steps) == len(lines), stderr  # nothing else on stderr, every step ended
    return steps


@pytest.mark.integration
def test_backup_create_verify_and_restore_show_each_step(cli: CliRunner) -> None:
    created = cli.invoke(app, ["backup", "create", "--json"], catch_exceptions=False)
    assert created.exit_code == 0, created.output
    backup_id = json.loads(created.stdout)["id"]
    assert _steps(created.stderr) == [
        "dump database and count rows",
        "dump redis",
        "bundle config and secrets",
    ]
    verified = cli.invoke(app, ["backup", "verify", backup_id, "--json"], catch_exceptions=False)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"] is True
    steps = _steps(verified.stderr)
    assert steps[0] == STEP_VERIFY and "checksum database" in steps
    restored = cli.invoke(
        app, ["restore", backup_id, "--yes", "--no-safety-backup", "--json"], catch_exceptions=False
    )
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["backup_id"] == backup_id
    steps = _steps(restored.stderr)
    order = [STEP_VERIFY, STEP_RESTORE_DATABASE, STEP_CHECK_ROWS]
    assert [step for step in steps if step in order] == order, steps
